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
