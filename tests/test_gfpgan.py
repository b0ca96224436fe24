"""GFPGAN enhancer end to end on real photos, with random-init checkpoints in the official formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frontal_exp.errors import ConfigError, MissingWeightsError


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt by facexlib / basicsr / torch.hub to download fails the test."""
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import facexlib.utils.misc

    monkeypatch.setattr(facexlib.utils.misc, "download_url_to_file", refuse)


@pytest.fixture(scope="module")
def scrfd_gfpgan(gfpgan_models):
    """SCRFD-500M finds the real face even with random GFPGAN weights; one instance, loaded once.
    Pasted back with GFPGAN's own soft square mask: the ParseNet mask (random weights: an arbitrary
    mask) costs more CPU than the restoration; test_retinaface_path_and_upscale runs it."""
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    return GFPGANEnhancer(face_detector="scrfd500m", models_dir=str(gfpgan_models), device="cpu", parse_mask=False)


@pytest.fixture(scope="module")
def scrfd_result(scrfd_gfpgan, astronaut) -> np.ndarray:
    return scrfd_gfpgan(astronaut)


def test_compat_makes_gfpgan_importable():
    code = (
        "import sys\n"
        "from frontal_exp.compat import ensure_basicsr_importable, import_gfpgan\n"
        "import torchvision.transforms.functional as F\n"
        "ensure_basicsr_importable(); ensure_basicsr_importable()\n"
        "assert sys.modules['torchvision.transforms.functional_tensor'].rgb_to_grayscale\n"
        "import_gfpgan()\n"
        "from gfpgan import GFPGANer\n"
        "from basicsr.data import degradations\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_missing_weights_name_file_size_and_url(tmp_path):
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    with pytest.raises(MissingWeightsError) as err:
        GFPGANEnhancer(version="1.3", models_dir=str(tmp_path))
    msg = str(err.value)
    assert "gfpgan/GFPGANv1.3.pth" in msg and "348,632,874" in msg
    assert "https://github.com/TencentARC/GFPGAN/releases" in msg
    # every missing file in one message, not one per attempt
    assert "facexlib/parsing_parsenet.pth" in msg and "facexlib/detection_Resnet50_Final.pth" in msg


def test_missing_facexlib_weights_are_a_clear_error(tmp_path, gfpgan_models):
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    (tmp_path / "gfpgan").mkdir()
    os.symlink(gfpgan_models / "gfpgan/GFPGANv1.4.pth", tmp_path / "gfpgan/GFPGANv1.4.pth")
    with pytest.raises(MissingWeightsError, match="parsing_parsenet.pth"):
        GFPGANEnhancer(models_dir=str(tmp_path), face_detector="scrfd500m")
    os.symlink(gfpgan_models / "facexlib/parsing_parsenet.pth", tmp_path / "parsing_parsenet.pth")
    with pytest.raises(MissingWeightsError, match="detection_Resnet50_Final.pth"):
        GFPGANEnhancer(models_dir=str(tmp_path), face_detector="retinaface")
    # the flat layout (files by name directly in models_dir) is accepted too
    GFPGANEnhancer(models_dir=str(tmp_path), face_detector="scrfd500m", device="cpu")


def test_bad_options_are_config_errors(gfpgan_models):
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    for kwargs in ({"version": "2.0"}, {"weight": 1.5}, {"device": "tpu"},
                   {"face_detector": "mtcnn"}, {"upscale": 0}):
        with pytest.raises(ConfigError):
            GFPGANEnhancer(models_dir=str(gfpgan_models), **kwargs)
    assert GFPGANEnhancer(version=1.3, models_dir=str(gfpgan_models)).version == "1.3"


def test_paste_back_restores_only_the_face(scrfd_gfpgan, scrfd_result, astronaut):
    out = scrfd_result
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert scrfd_gfpgan.device_used == "cpu"
    assert scrfd_gfpgan.no_face_count == 0
    changed = np.any(out != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 2000, "the face should be replaced"
    # the astronaut's face sits in the top middle of the photo: all changes stay near it
    assert ys.min() >= 0 and ys.max() < 260 and xs.min() > 120 and xs.max() < 360
    assert changed.mean() < 0.25
    # the restored region is an image, not a constant block
    assert out[changed].std() > 10


def test_deterministic_and_batched_like_single(scrfd_gfpgan, scrfd_result, astronaut):
    batch = scrfd_gfpgan.enhance_batch([astronaut, astronaut.copy()], [None, None])
    assert len(batch) == 2
    # fresh noise per call would make two items of one batch differ: stored noise does not
    np.testing.assert_array_equal(batch[0], batch[1])
    # batching must not change a face's result beyond float rounding
    diff = np.abs(batch[0].astype(int) - scrfd_result.astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01


def test_no_face_returns_the_image(scrfd_gfpgan):
    flat = np.full((96, 80, 3), 128, np.uint8)
    before = scrfd_gfpgan.no_face_count
    np.testing.assert_array_equal(scrfd_gfpgan(flat), flat)
    assert scrfd_gfpgan.no_face_count == before + 1


def test_aligned_face_output(gfpgan_models, astronaut):
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    # weight 0: the restorer is bypassed, so the output is exactly the FFHQ-aligned input
    enh = GFPGANEnhancer(face_detector="scrfd500m", models_dir=str(gfpgan_models), weight=0.0,
                         paste_back=False, device="cpu")
    aligned = enh(astronaut)
    assert aligned.shape == (512, 512, 3) and aligned.dtype == np.uint8
    assert enh._net is None  # noqa: SLF001 - weight 0 never needs the network
    # the detected eyes land on the FFHQ template's eyes: re-detecting in the crop finds them there
    from frontal_exp.enhancers.gfpgan import FFHQ_TEMPLATE_512
    from frontal_exp.enhancers.match_crop import detect_faces, largest

    face = largest(detect_faces(enh._detector, aligned))  # noqa: SLF001
    assert face is not None
    assert np.abs(face.kps[:2] - FFHQ_TEMPLATE_512[:2]).max() < 12


def test_parse_mask_keeps_face_classes_and_fades_at_the_rim(gfpgan_models):
    """The paste mask from ParseNet's labels (its output given here: a face on the right half,
    background on the left): face classes kept, the rest and a rim zero, edges blurred."""
    import torch

    from frontal_exp.enhancers.gfpgan import _PARSE_NOT_FACE, FACE_SIZE, GFPGANEnhancer

    enh = GFPGANEnhancer(face_detector="scrfd500m", models_dir=str(gfpgan_models), device="cpu")
    logits = torch.zeros(2, 19, FACE_SIZE, FACE_SIZE)
    logits[:, 1, :, FACE_SIZE // 2:] = 1  # skin
    logits[:, _PARSE_NOT_FACE[0], :, : FACE_SIZE // 2] = 1
    enh._parser = lambda batch: (logits[: len(batch)],)  # noqa: SLF001 - ParseNet's output, given
    faces = [np.zeros((FACE_SIZE, FACE_SIZE, 3), np.uint8)] * 2
    masks = enh.face_masks(faces)
    assert len(masks) == 2 and masks[0].shape == (FACE_SIZE, FACE_SIZE)
    mid = FACE_SIZE // 2
    assert masks[0][mid, mid + 100] > 0.99 and masks[0][mid, mid - 100] < 0.01  # face vs background
    assert 0.3 < masks[0][mid, mid] < 0.7  # a blurred edge, not a step
    assert masks[0][mid, -1] < 0.75 and masks[0][mid, -40] > 0.9  # a zero rim: faded toward the crop's edge


def test_retinaface_path_and_upscale(gfpgan_models, astronaut):
    """The official-format RetinaFace (random weights) goes through the same loading code."""
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    # random RetinaFace weights "find" faces anywhere: detection, parse mask and paste at 1.5x
    # run; weight 0 skips the GFPGAN pass the other tests already cover (it is the slow part)
    enh = GFPGANEnhancer(face_detector="retinaface", upscale=1.5, weight=0.0,
                         models_dir=str(gfpgan_models), device="cpu")
    crop = np.ascontiguousarray(astronaut[20:148, 180:308])
    out = enh(crop)
    assert out.shape == (192, 192, 3) and out.dtype == np.uint8
    assert enh.no_face_count == 0
    assert "gfpgan" in enh.cache_key()


def test_config_options_instantiate(make_cfg, gfpgan_models):
    from frontal_exp.config import instantiate_checked
    from frontal_exp.enhancers.chain import EnhancerChain
    from frontal_exp.enhancers.gfpgan import GFPGANEnhancer

    for option in ("gfpgan", "gfpgan_v13", "gfpgan_face", "gfpgan_corrections"):
        cfg = make_cfg(f"enhancer={option}", f"models_dir={gfpgan_models}", "device=cpu")
        enh = instantiate_checked(cfg.enhancer, "enhancer")
        gfp = enh.steps[0] if isinstance(enh, EnhancerChain) else enh
        assert isinstance(gfp, GFPGANEnhancer)
        assert enh.device_used == "cpu"
    assert gfp.paste_back is True
    face = instantiate_checked(make_cfg("enhancer=gfpgan_face", f"models_dir={gfpgan_models}").enhancer,
                               "enhancer")
    assert face.paste_back is False and face.version == "1.4"


def test_gfpgan_sweep_from_the_command_line(gfpgan_models, tmp_path, tmp_path_factory):
    """`python -m frontal_exp -m enhancer=gfpgan,gfpgan_v13 ...` as a user types it (a key that only the
    swept options have is itself written as a sweep, `choice(...)`, as Hydra requires): the enhancer
    in real runs, one child run per checkpoint version, each logged with the device it used, its
    figures and every item accounted for, under one parent. It is also the test of a sweep by
    Hydra's basic launcher (jobs one after the other in the process), checked like the other
    launchers' sweeps (tests/test_end_to_end.py::check_sweep). Pasted back without the ParseNet mask,
    the slower half of a restoration on CPU, which the tests above cover."""
    from tests.conftest import prepare_output_root
    from tests.test_end_to_end import check_summary, check_sweep, run_cli

    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = run_cli(["-m", "enhancer=gfpgan,gfpgan_v13",
                    "enhancer.face_detector=choice(scrfd500m)", "enhancer.parse_mask=choice(false)", "model=identity",
                    "dataset.limit=1", "eval.bootstrap=20", "eval.grid_samples=1", "protocol.analyses=[]",
                    f"models_dir={gfpgan_models}", "device=cpu", f"output_root={out_root}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_summary(proc.stdout, "enhancer=gfpgan_v13")
    assert proc.stdout.split("Sweep summary")[1].count("enhancer=gfpgan") == 2  # a row per job
    children = check_sweep(out_root, 2, "enhancer.version", {"1.3", "1.4"})
    for c in children:
        assert c.data.params["run.enhancer"] == "gfpgan" and c.data.params["run.enhancer_device"] == "cpu"
        m = c.data.metrics
        assert m["n_items"] == 1 and m["n"] + m["not_paired"] == 1 and m["enhance_failed"] == 0


@pytest.fixture()
def damaged_gfpgan_models(gfpgan_models, tmp_path) -> Path:
    """The registry layout with a truncated GFPGANv1.4.pth (an interrupted download)."""
    root = tmp_path / "models"
    for sub in ("gfpgan", "facexlib"):
        (root / sub).mkdir(parents=True)
        for f in (gfpgan_models / sub).iterdir():
            (root / sub / f.name).symlink_to(f)
    (root / "gfpgan/GFPGANv1.4.pth").unlink()
    (root / "gfpgan/GFPGANv1.4.pth").write_bytes((gfpgan_models / "gfpgan/GFPGANv1.4.pth").read_bytes()[:4096])
    return root


def test_a_damaged_checkpoint_stops_the_run_after_one_load(make_cfg, damaged_gfpgan_models, tmp_path, monkeypatch):
    """Not one load attempt per image (the batch fallback) and not 'every item failed': the
    first load names the file and stops the run."""
    from frontal_exp import weights
    from frontal_exp.errors import BadWeightsError
    from frontal_exp.evaluation import evaluate

    loads = []
    real_load = weights.load_torch_checkpoint
    monkeypatch.setattr(weights, "load_torch_checkpoint", lambda p: loads.append(p) or real_load(p))
    cfg = make_cfg("enhancer=gfpgan", "enhancer.face_detector=scrfd500m", "model=identity", "dataset.limit=3",
                   "tracking.enabled=false", f"models_dir={damaged_gfpgan_models}", "device=cpu",
                   output_root=tmp_path / "o")
    with pytest.raises(BadWeightsError, match=r"(?s)GFPGANv1.4.pth \(4,096 bytes\).*348,632,874 bytes"):
        evaluate(cfg)
    assert [Path(p).name for p in loads].count("GFPGANv1.4.pth") == 1


def test_infer_stops_on_a_damaged_checkpoint(damaged_gfpgan_models, astronaut, tmp_path, capsys):
    import cv2

    from frontal_exp.infer import main

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), astronaut)
    code = main(["--source_dir", str(src), "-o", str(tmp_path / "out"), "enhancer=gfpgan",
                 "enhancer.face_detector=scrfd500m", f"models_dir={damaged_gfpgan_models}", "device=cpu"])
    assert code == 2
    assert "BadWeightsError" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.png"))
