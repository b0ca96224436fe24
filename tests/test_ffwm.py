"""FFWM frontalizer: official checkpoint format round trip (seeded random weights), the old
spectral norm's eval behaviour, the crop rule, a frontalization of real photos, batching,
config / evaluation / infer CLI, and clear errors for missing or unusable files."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from frontal_exp.errors import (
    BadWeightsError,
    ConfigError,
    FrontalizationError,
    MissingWeightsError,
)
from frontal_exp.frontalizers.ffwm import FFWMFrontalizer, checkpoints
from frontal_exp.frontalizers.ffwm.crop import NOSE_TOP, CropRule, crop_matrix, crop_rule, cut
from frontal_exp.frontalizers.ffwm.networks import SNConv2d

from ._ffwm_weights import write_official_weights


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def ffwm_files(tmp_path_factory):
    """The two official files (legacy torch.save format) of seeded random networks."""
    root = tmp_path_factory.mktemp("ffwm_models")
    nets = write_official_weights(root)
    return root, nets


@pytest.fixture(scope="module")
def frontalizer(ffwm_files) -> FFWMFrontalizer:
    return FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cpu")


def _link_files(src: Path, dst: Path) -> None:
    for rel in checkpoints.ALL_FILES:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(src / rel)


def test_random_checkpoints_use_the_official_format(ffwm_files):
    root, _ = ffwm_files
    flow_path, gen_path = root / checkpoints.FLOW_FILE, root / checkpoints.GENERATOR_FILE
    # torch 1.5's legacy (non-zip) serialisation, as the released files
    assert not zipfile.is_zipfile(flow_path) and not zipfile.is_zipfile(gen_path)
    flow = torch.load(flow_path, map_location="cpu", weights_only=True)
    gen = torch.load(gen_path, map_location="cpu", weights_only=True)
    assert len(flow) == 243 and len(gen) == 383
    buffers = ("weight_u", "weight_v", "running_mean", "running_var", "num_batches_tracked")
    # learnable parameters, as counted for the released files
    assert sum(v.numel() for k, v in flow.items() if not k.endswith(buffers)) == 52_357_370
    assert sum(v.numel() for k, v in gen.items() if not k.endswith(buffers)) == 16_245_227
    assert sum(k.startswith("inter_conv_occ") for k in flow) == 42
    assert sum(k.endswith("num_batches_tracked") for k in flow) == 31
    assert not any(k.startswith("module.") for k in [*flow, *gen])
    assert {"e0.0.bias", "e0.0.weight_orig", "e0.0.weight_u", "e0.0.weight_v"} <= set(gen)
    assert not any(k.endswith(".weight") and k.replace(".weight", ".weight_orig") in gen for k in gen)
    assert sum(k.endswith("weight_orig") for k in gen) == 52


def test_checkpoints_load_strictly_unused_keys_by_name(ffwm_files, frontalizer):
    _, nets = ffwm_files
    for name, module in frontalizer.networks.modules().items():
        want = nets.modules()[name].state_dict()
        got = module.state_dict()
        assert list(got) == list(want), name
        for key, value in want.items():
            assert torch.equal(got[key], value), f"{name}.{key}"
    assert all(k.startswith("inter_conv_occ") for k in checkpoints.UNUSED_FLOW_KEYS)
    assert len(checkpoints.UNUSED_FLOW_KEYS) == 42


def test_zip_format_and_new_style_spectral_norm_keys_load_the_same(ffwm_files, tmp_path):
    _, nets = ffwm_files
    paths = checkpoints.save_networks(nets, tmp_path, legacy=False)
    assert zipfile.is_zipfile(paths[checkpoints.FLOW_FILE])
    # netG re-saved with torch.nn.utils.parametrizations.spectral_norm's names
    renames = {"weight_orig": "parametrizations.weight.original", "weight_u": "parametrizations.weight.0._u",
               "weight_v": "parametrizations.weight.0._v"}
    new_style = {}
    for key, value in nets.generator.state_dict().items():
        head, _, last = key.rpartition(".")
        new_style[f"{head}.{renames[last]}" if last in renames else key] = value
    torch.save(new_style, paths[checkpoints.GENERATOR_FILE])
    loaded = checkpoints.load_networks(tmp_path)
    for name, module in loaded.modules().items():
        for key, value in nets.modules()[name].state_dict().items():
            assert torch.equal(module.state_dict()[key], value), f"{name}.{key}"


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("flow", lambda s: s.pop("conv3.0.bias"), r"latest_net_flowNetF.pth.*conv3.0.bias"),
    ("flow", lambda s: s.__setitem__("inter_conv_occ6.0.weight", torch.zeros(1)), r"inter_conv_occ6"),
    ("gen", lambda s: s.__setitem__("rec2.0.weight_orig", torch.zeros(3, 194, 3, 3)),
     r"latest_net_netG.pth.*rec2.0.weight_orig"),
    ("gen", lambda s: s.pop("d1.0.weight_u"), r"latest_net_netG.pth.*d1.0.weight_u"),
])
def test_a_mismatched_checkpoint_is_refused_naming_the_file(ffwm_files, tmp_path, file, edit, message):
    root, _ = ffwm_files
    _link_files(root, tmp_path)
    rel = checkpoints.FLOW_FILE if file == "flow" else checkpoints.GENERATOR_FILE
    state = torch.load(root / rel, weights_only=True)
    edit(state)
    (tmp_path / rel).unlink()
    torch.save(state, tmp_path / rel)
    with pytest.raises(BadWeightsError, match=message):
        checkpoints.load_networks(tmp_path)


def test_a_truncated_checkpoint_stops_the_run_naming_the_file(ffwm_files, make_cfg, tmp_path):
    from frontal_exp.evaluation import evaluate

    root, _ = ffwm_files
    models = tmp_path / "models"
    _link_files(root, models)
    damaged = models / checkpoints.GENERATOR_FILE
    damaged.unlink()
    damaged.write_bytes((root / checkpoints.GENERATOR_FILE).read_bytes()[:7000])
    cfg = make_cfg("model=ffwm", f"models_dir={models}", "device=cpu", "dataset.limit=2",
                   "tracking.enabled=false", output_root=tmp_path / "o")
    with pytest.raises(BadWeightsError, match=r"(?s)latest_net_netG.pth \(7,000 bytes\).*PyTorch checkpoint.*drive.google"):
        evaluate(cfg)
    assert not list((tmp_path / "o" / "cache").rglob("*.fail"))


def test_missing_files_are_named_with_their_source(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        FFWMFrontalizer(models_dir=str(tmp_path), device="cpu")
    msg = str(info.value)
    assert "ffwm/latest_net_flowNetF.pth" in msg and "ffwm/latest_net_netG.pth" in msg
    assert msg.count("drive.google.com/drive/folders/1U26FvuLtXraxPrRNxCxFka3DOvRuG4NW") == 2
    (tmp_path / "latest_net_netG.pth").write_bytes(b"")  # flat layout counts
    with pytest.raises(MissingWeightsError) as info:
        FFWMFrontalizer(models_dir=str(tmp_path), device="cpu")
    assert "flowNetF" in str(info.value) and "netG.pth" not in str(info.value)


@torch.no_grad()
def test_spectral_norm_uses_the_stored_vectors_as_torchs_old_spectral_norm():
    """Against torch's own old-style spectral_norm in eval mode, with u/v NOT converged:
    sigma = u.(W v) from the stored vectors, not the exact largest singular value."""
    torch.manual_seed(0)
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 5, 3, 2, 1)).eval()
    ref.weight_u.copy_(torch.nn.functional.normalize(torch.randn(5), dim=0))
    ref.weight_v.copy_(torch.nn.functional.normalize(torch.randn(54), dim=0))
    mine = SNConv2d(6, 5, 3, 2, 1)
    mine.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 9, 9)
    assert torch.allclose(mine(x), ref(x), atol=1e-6)
    exact = torch.nn.functional.conv2d(x, ref.weight_orig / torch.linalg.matrix_norm(
        ref.weight_orig.flatten(1), ord=2), ref.bias, 2, 1)
    assert not torch.allclose(mine(x), exact, atol=1e-3)


def _face_landmarks(rotate_deg: float) -> np.ndarray:
    """106 points: eyes level at y=100, nose top at (150, 100), chin at y=200, rotated."""
    pts = np.zeros((106, 2))
    pts[:, 0], pts[:, 1] = 150, 150
    pts[[33, 35, 40, 39]] = [[110, 100]] * 4
    pts[[87, 89, 94, 93]] = [[190, 100]] * 4
    pts[NOSE_TOP] = [150, 100]
    pts[0] = [150, 200]  # chin
    pts[[*range(43, 52), *range(97, 106)]] = [150, 85]  # brows
    pts[80] = [150, 140]  # subnasale
    a = math.radians(rotate_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (pts - 150) @ rot.T + 150


def test_crop_rule_truncates_the_angle_and_reaches_the_hairline():
    level = crop_rule(_face_landmarks(0), (300, 300), forehead_ratio=0.0)
    assert level == CropRule(0, 150, 100, 100)  # radius: nose top to chin
    # the estimated hairline, 1 x brow-to-subnasale (55 px) above the brows: 85 - 55 = 30
    assert crop_rule(_face_landmarks(0), (300, 300), forehead_ratio=1.0).radius == 100
    assert crop_rule(_face_landmarks(0), (300, 300), forehead_ratio=3.0).radius == 100 - (85 - 3 * 55)
    for deg, expected in ((25.7, 25), (-7.9, -7), (0.6, 0)):
        # eyes rotated by +deg on screen (y down) -> the photo is rotated back by int(deg)
        rule = crop_rule(_face_landmarks(deg), (300, 300), forehead_ratio=0.0)
        assert rule.degrees == expected, deg
        assert abs(rule.cx - 150) <= 1 and abs(rule.cy - 100) <= 1 and abs(rule.radius - 100) <= 1


def test_cut_equals_rotate_slice_and_pad_as_the_reference(astronaut):
    h, w = astronaut.shape[:2]
    for rule in (CropRule(0, 250, 180, 120), CropRule(12, 260, 200, 230), CropRule(-5, 40, 30, 80)):
        mat = cv2.getRotationMatrix2D((w // 2, h // 2), rule.degrees, 1)
        rotated = cv2.warpAffine(astronaut, mat, (w, h)) if rule.degrees else astronaut
        cx, cy, r = rule.cx, rule.cy, rule.radius
        img = rotated[max(0, cy - r):cy + r, max(0, cx - r):cx + r]
        img = np.pad(img, ((max(0, r - cy), max(0, cy + r - h)), (max(0, r - cx), max(0, cx + r - w)), (0, 0)))
        want = cv2.resize(img, (128, 128), interpolation=cv2.INTER_CUBIC)
        got = cut(astronaut, rule)
        diff = np.abs(got.astype(int) - want.astype(int))
        # one rotation either way; only OpenCV's fixed-point rounding differs
        assert diff.max() <= 4 and diff.mean() < 0.1, (rule, diff.max(), diff.mean())
        # and the matrix used for pasting back maps the same pixels (sampled at the centre)
        m = crop_matrix(rule, (w, h))
        back = cv2.warpAffine(astronaut, m[:2], (128, 128), flags=cv2.INTER_LINEAR)
        inside = got[16:112, 16:112].max(2) > 0  # not the black beyond the rotated canvas
        err = np.abs(back[16:112, 16:112].astype(int) - got[16:112, 16:112].astype(int)).max(2)
        assert inside.mean() > 0.3 and err[inside].mean() < 4, rule


def test_frontalizes_a_real_photo_and_pastes_it_back(frontalizer, astronaut):
    out = frontalizer(astronaut)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - astronaut.astype(int)).mean() > 1.0
    assert np.array_equal(out[-20:, -20:], astronaut[-20:, -20:])
    flows = frontalizer.last_output.flows
    assert [f.shape for f in flows] == [(1, 2, 128, 128), (1, 2, 64, 64), (1, 2, 32, 32)]
    assert all(float(f.abs().max()) <= 1 for f in flows)
    # the face went where the crop came from: the changed pixels sit inside the crop square
    crop = frontalizer.crop(astronaut)
    changed = np.argwhere(np.abs(out.astype(int) - astronaut.astype(int)).max(2) > 0)
    pts = np.c_[changed[:, 1], changed[:, 0], np.ones(len(changed))] @ crop.image_to_crop[:2].T
    assert pts.min() > -2 and pts.max() < 130


def test_aligned_crop_option_batching_and_failures(frontalizer, astronaut):
    blank = np.full((200, 200, 3), 127, np.uint8)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    frontalizer.paste_back = False
    try:
        faces = frontalizer.frontalize_batch([astronaut, blank, flipped])
        single = frontalizer(flipped)
    finally:
        frontalizer.paste_back = True
    assert isinstance(faces[1], FrontalizationError) and "ffwm: no face" in str(faces[1])
    assert faces[0].shape == (128, 128, 3) and faces[0].dtype == np.uint8
    assert 10 < faces[0].mean() < 245 and faces[0].std() > 1
    assert np.abs(faces[2].astype(int) - single.astype(int)).max() <= 1
    assert np.abs(faces[0].astype(int) - faces[2].astype(int)).mean() > 1
    with pytest.raises(FrontalizationError, match="no face"):
        frontalizer(blank)


def test_config_instantiates_and_cache_keys_follow_settings_and_weights(ffwm_files, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/ffwm.yaml")
    cfg.models_dir, cfg.device = str(ffwm_files[0]), "cpu"
    model = instantiate(cfg)
    assert isinstance(model, FFWMFrontalizer) and model.name == "ffwm"
    key = model.cache_key()
    assert "ffwm|code " in key and "file:" in key
    assert instantiate(cfg).cache_key() == key
    assert instantiate(cfg, forehead_ratio=0.5).cache_key() != key
    assert instantiate(cfg, paste_back=False).cache_key() != key
    # other weights (same names, one tensor changed): another key
    other = tmp_path / "other"
    _link_files(ffwm_files[0], other)
    state = torch.load(ffwm_files[0] / checkpoints.GENERATOR_FILE, weights_only=True)
    state["rec2.0.bias"] = state["rec2.0.bias"] + 1
    (other / checkpoints.GENERATOR_FILE).unlink()
    torch.save(state, other / checkpoints.GENERATOR_FILE)
    assert instantiate(cfg, models_dir=str(other)).cache_key() != key
    with pytest.raises(ConfigError, match="batch_size"):
        FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cpu", batch_size=0)


def test_device_rule_and_fp16(ffwm_files, astronaut):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cuda")
        cpu = FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="auto", fp16=True)
        assert cpu.device.type == "cpu" and cpu.fp16 is False
        return
    fp32 = FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cuda", paste_back=False)
    fp16 = FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cuda", fp16=True, paste_back=False)
    cpu = FFWMFrontalizer(models_dir=str(ffwm_files[0]), device="cpu", paste_back=False)
    a, b, c = (f(astronaut).astype(int) for f in (fp32, fp16, cpu))
    assert np.abs(a - c).max() <= 2
    assert np.abs(b - a).mean() < 2.0
    assert fp16.cache_key() != fp32.cache_key()


def test_ffwm_runs_from_the_command_line_paths(ffwm_files, make_cfg, tmp_path, real_faces, tmp_path_factory):
    """`model=ffwm model.weights_dir=...` in an evaluation on real photos, logged to MLflow,
    and in the inference CLI."""
    from mlflow import MlflowClient

    from frontal_exp.evaluation import evaluate
    from frontal_exp.infer import main as infer
    from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
    from tests.conftest import mlflow_db

    weights_dir = ffwm_files[0] / "ffwm"
    out_root = mlflow_db(tmp_path / "o" / "mlflow.db", tmp_path_factory).parent  # the schema made
    cfg = make_cfg("model=ffwm", f"model.weights_dir={weights_dir}", "device=cpu", "dataset=folder",
                   f"dataset.root={real_faces / 'obama'}/..", "dataset.gt=first", "dataset.limit=2",
                   "dataset.estimate_pose=false", "eval.bootstrap=20", "eval.grid_samples=2",
                   "protocol.analyses=[]", output_root=out_root)
    result = evaluate(cfg)
    assert result.params["model"] == "ffwm" and result.params["model_device"] == "cpu"
    assert result.metrics["n_items"] >= 2 and result.metrics["frontalize_failed"] == 0
    run = MlflowClient(default_sqlite_uri(out_root)).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    # every photo was frontalized; random weights draw noise, in which the detector finds
    # no face, and the run says so rather than failing
    assert result.metrics["frontalized_computed"] == result.metrics["n_items"]
    assert result.metrics["no_face_frontal"] + result.metrics["n"] == result.metrics["n_items"]
    for key in ("n_items", "no_face_frontal", "frontalize_failed", "angle_to_gt_all"):
        assert run.data.metrics[key] == pytest.approx(result.metrics[key]), key
    assert run.data.params["model._target_"].endswith("FFWMFrontalizer")

    src = tmp_path / "src"
    src.mkdir()
    photo = next((real_faces / "obama").glob("*.jpg"))
    image = cv2.imread(str(photo))
    cv2.imwrite(str(src / "face.png"), image)
    out = tmp_path / "out"
    assert infer(["--source_dir", str(src), "-o", str(out), "--frontalize", "model=ffwm",
                  f"model.weights_dir={weights_dir}", "device=cpu"]) == 0
    assert cv2.imread(str(out / "face.png")).shape == image.shape
