"""The inference CLI (the original study's inference.py interface)."""

from __future__ import annotations

import csv

import cv2
import numpy as np

from frontal_exp.infer import main


def test_infer_writes_outputs_under_same_names_and_lists_skips(identity_tree, tmp_path, package_photos):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    face = cv2.imread(str(identity_tree / "astronaut" / "frontal.png"))
    cv2.imwrite(str(src / "a.png"), face)
    cv2.imwrite(str(src / "sub" / "b.png"), cv2.flip(face, 1))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cv2.imwrite(str(src / "wall.png"), np.full((128, 128, 3), 200, np.uint8))
    cv2.imwrite(str(src / "ignored.jpg"), face)
    out = tmp_path / "out"
    rc = main(["--source_dir", str(src), "--source_pattern", "**/*.png", "-o", str(out), "--frontalize",
               "enhancer=sharp"])
    assert rc == 0
    assert (out / "a.png").is_file() and (out / "sub" / "b.png").is_file()
    assert not (out / "ignored.jpg").exists()
    a = cv2.imread(str(out / "a.png"))
    assert a.shape == face.shape and not np.array_equal(a, face)
    with open(out / "skipped.csv") as f:
        rows = {r["file"]: r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == {"broken.png", "wall.png"}
    assert "BadImageError" in rows["broken.png"] and "FrontalizationError" in rows["wall.png"]
    # a second run keeps what exists and redoes nothing
    mtime = (out / "a.png").stat().st_mtime_ns
    assert main(["--source_dir", str(src), "--source_pattern", "**/*.png", "-o", str(out), "--frontalize"]) == 0
    assert (out / "a.png").stat().st_mtime_ns == mtime


def test_infer_without_frontalize_only_enhances(identity_tree, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    face = cv2.imread(str(identity_tree / "yao_ming" / "frontal.png"))
    cv2.imwrite(str(src / "y.png"), face)
    assert main(["--source_dir", str(src), "-o", str(tmp_path / "o")]) == 0
    assert np.array_equal(cv2.imread(str(tmp_path / "o" / "y.png")), face)  # enhancer=none


def test_infer_reports_bad_arguments(tmp_path, capsys):
    assert main(["--source_dir", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "s").mkdir()
    assert main(["--source_dir", str(tmp_path / "s"), "-o", str(tmp_path / "o"), "--frontalize",
                 "model=liveportrait", f"models_dir={tmp_path}"]) == 2
    assert "MissingWeightsError" in capsys.readouterr().err


def photo_folder(root, names=("a.jpg", "sub/b.jpg")) -> dict:
    """Small distinct photos under root; returns their bytes by relative name."""
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
    return {name: (root / name).read_bytes() for name in names}


def unchanged(root, before: dict) -> bool:
    return {name: (root / name).read_bytes() for name in before} == before


def test_infer_refuses_the_source_folder_as_output(tmp_path, capsys):
    src = tmp_path / "src"
    before = photo_folder(src)
    for extra in ([], ["--overwrite"]):
        assert main(["--source_dir", str(src), "--source_pattern", "**/*.jpg", "-o", str(src), *extra]) == 2
        assert "is the source folder" in capsys.readouterr().err
    # the same folder spelled another way, or through a symlink
    (tmp_path / "link").symlink_to(src)
    assert main(["--source_dir", str(src), "-o", str(tmp_path / "link"), "--overwrite"]) == 2
    assert main(["--source_dir", str(src / "sub" / ".."), "-o", str(src), "--overwrite"]) == 2
    assert unchanged(src, before) and sorted(p.name for p in src.rglob("*")) == ["a.jpg", "b.jpg", "sub"]


def test_infer_never_reads_its_output_folder_as_input(tmp_path, capsys):
    """-o <source>/out with '**/*.jpg': a re-run reads the inputs, not the previous outputs."""
    src = tmp_path / "src"
    before = photo_folder(src)
    args = ["--source_dir", str(src), "--source_pattern", "**/*.jpg", "-o", str(src / "out")]
    assert main(args) == 0
    assert "2 matched, 2 written" in capsys.readouterr().out
    assert (src / "out" / "a.jpg").is_file() and (src / "out" / "sub" / "b.jpg").is_file()
    assert main(args) == 0
    assert "2 matched (2 more in the output folder, not inputs), 0 written, 2 kept" in capsys.readouterr().out
    assert main([*args, "--overwrite"]) == 0
    assert "2 written" in capsys.readouterr().out
    assert not (src / "out" / "out").exists()
    assert unchanged(src, before)


def test_infer_refuses_to_write_onto_an_input_or_into_the_source(tmp_path, capsys):
    src = tmp_path / "src"
    before = photo_folder(src)
    # an output folder holding a link back to an input: writing there would replace the input
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jpg").symlink_to(src / "a.jpg")
    assert main(["--source_dir", str(src), "--source_pattern", "**/*.jpg", "-o", str(tmp_path / "out"),
                 "--overwrite"]) == 2
    assert "would be written onto the input" in capsys.readouterr().err
    # an output folder above the source: src/src/x.jpg would come out as src/x.jpg, a new input
    photo_folder(src, ("src/x.jpg",))
    assert main(["--source_dir", str(src), "--source_pattern", "**/*.jpg", "-o", str(tmp_path)]) == 2
    assert "into the source folder" in capsys.readouterr().err
    assert unchanged(src, before) and not (src / "x.jpg").exists()


def test_a_pattern_that_matches_nothing_says_what_is_there(identity_tree, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    face = cv2.imread(str(identity_tree / "astronaut" / "frontal.png"))
    for name in ("a.jpg", "b.jpg", "sub/c.jpg", "d.png"):
        cv2.imwrite(str(src / name), face)
    out = tmp_path / "out"
    assert main(["--source_dir", str(src), "--source_pattern", "*.webp", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"0 files match '*.webp' under {src}; 3 .jpg files, 1 .png file there" in err
    assert "use --source_pattern '**/*.jpg'" in err
    assert not out.exists()  # nothing written, not even skipped.csv
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--source_dir", str(empty), "-o", str(out)]) == 1
    assert "holds no image files" in capsys.readouterr().err
