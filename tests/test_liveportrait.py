"""LivePortrait frontalizer: official checkpoint layout round trip (random weights), a full
frontalization of a real photo on CPU, frontal driving keypoints, clear missing-file errors."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from frontal_exp.errors import BadWeightsError, FrontalizationError, MissingWeightsError
from frontal_exp.frontalizers.liveportrait import LivePortraitFrontalizer, checkpoints
from frontal_exp.frontalizers.liveportrait.crop import crop_matrix, paste_back
from frontal_exp.frontalizers.liveportrait.keypoints import (
    bins_to_degrees,
    rotation_matrix,
)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def frontalizer(lp_random) -> LivePortraitFrontalizer:
    return LivePortraitFrontalizer(models_dir=str(lp_random[0]), device="cpu")


@pytest.fixture(scope="session")
def astronaut_run(frontalizer, astronaut):
    """One full frontalization, with the keypoints the warp actually received."""
    seen = {}

    def hook(module, args, kwargs):
        seen["kp_driving"] = kwargs["kp_driving"].clone()
        seen["kp_source"] = kwargs["kp_source"].clone()

    handle = frontalizer.networks.warping_module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        out = frontalizer(astronaut)
    finally:
        handle.remove()
    return out, frontalizer.last_motion, seen


def test_random_checkpoints_use_the_official_layout(lp_random):
    root, _ = lp_random
    for rel in checkpoints.BASE_FILES.values():
        state = torch.load(root / rel, map_location="cpu", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert not any(k.startswith("module.") for k in state)
    spade = torch.load(root / checkpoints.BASE_FILES["spade_generator"], weights_only=True)
    assert "G_middle_0.conv_0.weight_orig" in spade and "up_0.conv_s.weight_u" in spade
    motion = torch.load(root / checkpoints.BASE_FILES["motion_extractor"], weights_only=True)
    assert "detector.stages.2.8.grn.gamma" in motion and "detector.fc_yaw.weight" in motion
    retarget = torch.load(root / checkpoints.RETARGETING_FILE, weights_only=True)
    assert set(retarget) == {"retarget_shoulder", "retarget_mouth", "retarget_eye"}
    assert retarget["retarget_shoulder"]["module.mlp.0.weight"].shape == (128, 126)
    assert retarget["retarget_mouth"]["module.mlp.0.weight"].shape == (128, 65)
    assert retarget["retarget_eye"]["module.mlp.10.weight"].shape == (63, 64)


def test_checkpoints_round_trip_strictly_through_the_frontalizer(frontalizer, lp_random):
    _, states = lp_random
    loaded = frontalizer.networks
    for name, module in loaded.modules().items():
        got = module.state_dict()
        assert list(got) == list(states[name]), name
        for key, value in states[name].items():
            assert torch.equal(got[key], value), f"{name}.{key}"


def test_a_mismatched_checkpoint_is_refused(lp_random, tmp_path):
    root, states = lp_random
    for rel in checkpoints.ALL_FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).symlink_to(root / rel)
    bad = dict(states["appearance_feature_extractor"])
    bad.pop("second.bias")
    target = tmp_path / checkpoints.BASE_FILES["appearance_feature_extractor"]
    target.unlink()
    torch.save(bad, target)
    with pytest.raises(BadWeightsError, match=r"appearance_feature_extractor.pth.*second.bias"):
        checkpoints.load_networks(tmp_path)


def test_a_damaged_checkpoint_stops_the_run_naming_the_file(lp_random, make_cfg, tmp_path):
    """A truncated download is not 'every item failed': the run stops at once, naming the file,
    and nothing is cached as an item failure."""
    from frontal_exp.evaluation import evaluate

    root, _ = lp_random
    models = tmp_path / "models"
    for rel in checkpoints.ALL_FILES:
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).symlink_to(root / rel)
    damaged = models / checkpoints.BASE_FILES["motion_extractor"]
    damaged.unlink()
    damaged.write_bytes((root / checkpoints.BASE_FILES["motion_extractor"]).read_bytes()[:5000])
    cfg = make_cfg("model=liveportrait", f"models_dir={models}", "device=cpu", "dataset.limit=2",
                   "tracking.enabled=false", output_root=tmp_path / "o")
    with pytest.raises(BadWeightsError, match=r"(?s)motion_extractor.pth \(5,000 bytes\).*PyTorch checkpoint.*huggingface"):
        evaluate(cfg)
    assert not list((tmp_path / "o" / "cache").rglob("*.fail"))


def test_missing_files_are_named_with_their_urls(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        LivePortraitFrontalizer(models_dir=str(tmp_path))
    msg = str(info.value)
    for rel in checkpoints.ALL_FILES:
        assert rel in msg
    assert msg.count("huggingface.co/KwaiVGI/LivePortrait") == 5

    for rel in checkpoints.ALL_FILES[1:]:  # all but the appearance extractor
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    with pytest.raises(MissingWeightsError) as info:
        LivePortraitFrontalizer(models_dir=str(tmp_path))
    msg = str(info.value)
    assert "appearance_feature_extractor.pth" in msg and "motion_extractor.pth" not in msg


def test_frontalizes_a_real_photo(astronaut_run, astronaut):
    out, motion, _ = astronaut_run
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    # the face region changed, the far background did not
    assert np.abs(out.astype(int) - astronaut.astype(int)).mean() > 1.0
    assert np.array_equal(out[-20:, -20:], astronaut[-20:, -20:])
    assert motion.x_d.shape == (1, 21, 3) and torch.isfinite(motion.x_d).all()


def test_warp_receives_frontal_driving_keypoints(astronaut_run, frontalizer):
    _, motion, seen = astronaut_run
    assert torch.equal(seen["kp_driving"], motion.x_d)
    assert torch.equal(seen["kp_source"], motion.x_s)
    assert torch.equal(motion.driving_yaw, torch.zeros(1))
    assert torch.allclose(motion.driving_rotation, torch.eye(3)[None], atol=1e-7)

    # without stitching, x_d is exactly scale * (x_c @ I + exp) + (tx, ty, 0)
    src = motion.source
    frontalizer.stitching = False
    try:
        plain = frontalizer.driving_keypoints(src, motion.x_s)
    finally:
        frontalizer.stitching = True
    expected = src.scale[:, :, None] * (src.kp + src.exp)
    expected[..., :2] += src.t[:, None, :2]
    assert torch.allclose(plain.x_d, expected, atol=1e-6)
    # the pose those keypoints imply: solve x_c @ R = (x_d - t) / scale - exp for R
    lhs = src.kp[0].double()
    rhs = ((plain.x_d - F_pad(src.t)) / src.scale[:, :, None] - src.exp)[0].double()
    rot = torch.linalg.lstsq(lhs, rhs).solution
    assert torch.allclose(rot, torch.eye(3, dtype=torch.float64), atol=1e-4)
    # stitching only adds its MLP's correction on top
    sr = frontalizer.networks.stitching_retargeting_module
    delta = sr.stitching(torch.cat([motion.x_s.reshape(1, -1), plain.x_d.reshape(1, -1)], 1))
    stitched = plain.x_d + delta[:, :63].view(1, 21, 3)
    stitched[..., :2] += delta[:, None, 63:65]
    assert torch.allclose(motion.x_d, stitched, atol=1e-6)


def F_pad(t: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(t[:, :2], (0, 1))[:, None, :]


def test_keep_fractions_and_retargeting(astronaut_run, frontalizer):
    _, motion, _ = astronaut_run
    src = motion.source
    frontalizer.keep_pitch, frontalizer.keep_roll = 0.5, 0.25
    try:
        kept = frontalizer.driving_keypoints(src, motion.x_s)
    finally:
        frontalizer.keep_pitch = frontalizer.keep_roll = 0.0
    assert torch.allclose(kept.driving_pitch, 0.5 * src.pitch)
    assert torch.allclose(kept.driving_roll, 0.25 * src.roll)
    expected_rot = rotation_matrix(0.5 * src.pitch, torch.zeros(1), 0.25 * src.roll)
    assert torch.allclose(kept.driving_rotation, expected_rot)

    frontalizer.eye_retargeting = 0.4
    try:
        eye = frontalizer.driving_keypoints(src, motion.x_s, torch.tensor([[0.3, 0.3]]), None)
    finally:
        frontalizer.eye_retargeting = None
    assert not torch.allclose(eye.x_d, motion.x_d)


def test_deterministic_batch_without_paste_back(frontalizer, astronaut_run, astronaut):
    out, _, _ = astronaut_run
    blank = np.full((200, 200, 3), 127, np.uint8)
    frontalizer.paste_back = False
    try:
        face, failure = frontalizer.frontalize_batch([astronaut, blank])
    finally:
        frontalizer.paste_back = True
    assert isinstance(failure, FrontalizationError) and "no face" in str(failure)
    assert face.shape == (512, 512, 3) and face.dtype == np.uint8
    assert 10 < face.mean() < 245 and face.std() > 1
    # same networks output as the first run, pasted the same way: deterministic
    crop = frontalizer.crop(astronaut)
    assert np.array_equal(paste_back(face, crop.image_to_crop, astronaut, frontalizer._mask), out)
    with pytest.raises(FrontalizationError, match="no face"):
        frontalizer(blank)


def test_batched_faces_match_single_faces(frontalizer, astronaut):
    # the architecture is fully convolutional: 128x128 crops keep this test cheap
    crop = frontalizer.crop(astronaut)
    small = dataclasses.replace(crop, image=cv2.resize(crop.image, (128, 128), interpolation=cv2.INTER_AREA))
    flipped = dataclasses.replace(small, image=np.ascontiguousarray(small.image[:, ::-1]))
    pair = frontalizer.frontalize_crops([small, flipped])
    single = frontalizer.frontalize_crops([flipped])
    assert pair.shape == (2, 256, 256, 3)
    diff = np.abs(pair[1].astype(int) - single[0].astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert np.abs(pair[0].astype(int) - pair[1].astype(int)).mean() > 1


def test_pose_math_zero_is_identity():
    assert torch.allclose(rotation_matrix(torch.zeros(1), torch.zeros(1), torch.zeros(1)), torch.eye(3)[None])
    # uniform bins: the expectation is the middle bin, which the offset maps to 0 degrees
    assert torch.allclose(bins_to_degrees(torch.zeros(1, 66)), torch.zeros(1), atol=1e-4)
    r = rotation_matrix(torch.tensor([10.0]), torch.tensor([-30.0]), torch.tensor([5.0]))
    assert torch.allclose(r[0] @ r[0].T, torch.eye(3), atol=1e-6)
    # yaw alone turns about the vertical axis: with kp @ R, +90 deg takes +x to -z
    ry = rotation_matrix(torch.zeros(1), torch.tensor([90.0]), torch.zeros(1))
    assert torch.allclose(torch.tensor([[1.0, 0, 0]]) @ ry[0], torch.tensor([[0, 0, -1.0]]), atol=1e-6)


def test_crop_removes_roll(astronaut, frontalizer):
    lmk = frontalizer.landmarker(astronaut)
    for degrees in (0.0, 25.0):
        centre = lmk.mean(0)
        a = math.radians(degrees)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        pts = (lmk - centre) @ rot.T + centre
        m = crop_matrix(pts, 512, 2.3, 0.0, -0.125)
        inside = pts @ m[:2, :2].T + m[:2, 2]
        eyes = (inside[[33, 35, 40, 39]].mean(0) + inside[[87, 89, 94, 93]].mean(0)) / 2
        mouth = inside[[52, 61]].mean(0)
        assert abs(eyes[0] - mouth[0]) < 1e-6 and mouth[1] > eyes[1]
        assert inside.min() > 0 and inside.max() < 512


def test_config_instantiates(lp_random):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/liveportrait.yaml")
    cfg.models_dir, cfg.device = str(lp_random[0]), "cpu"
    model = instantiate(cfg)
    assert isinstance(model, LivePortraitFrontalizer) and model.name == "liveportrait"
    other = instantiate(cfg, keep_pitch=0.5)
    assert model.cache_key() != other.cache_key()


def test_liveportrait_runs_from_the_command_line_paths(lp_random, make_cfg, tmp_path):
    """`model=liveportrait model.weights_dir=...` in an evaluation and in the inference CLI."""
    from frontal_exp.evaluation import evaluate
    from frontal_exp.infer import main as infer

    weights_dir = lp_random[0] / "liveportrait"  # the pack folder itself also works
    cfg = make_cfg("model=liveportrait", f"model.weights_dir={weights_dir}", "device=cpu",
                   "dataset.limit=1", "eval.bootstrap=20", "tracking.enabled=false",
                   "protocol.analyses=[]", output_root=tmp_path / "o")
    result = evaluate(cfg)
    assert result.params["model"] == "liveportrait" and result.params["model_device"] == "cpu"
    assert result.metrics["n_items"] == 1 and result.metrics["frontalize_failed"] == 0

    src = tmp_path / "src"
    src.mkdir()
    skimage_data = pytest.importorskip("skimage.data")
    face = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(src / "astronaut.png"), cv2.resize(face, (256, 256)))
    out = tmp_path / "out"
    assert infer(["--source_dir", str(src), "-o", str(out), "--frontalize", "model=liveportrait",
                  f"model.weights_dir={weights_dir}", "device=cpu"]) == 0
    assert cv2.imread(str(out / "astronaut.png")).shape == (256, 256, 3)
