"""Every config option composes and instantiates; typos and bad values fail at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from frontal_exp.app import CONFIG_DIR
from frontal_exp.config import GROUPS, check_node, instantiate_checked
from frontal_exp.errors import ConfigError
from frontal_exp.fingerprint import file_identity

OPTIONS = {g: sorted(p.stem for p in (Path(CONFIG_DIR) / g).glob("*.yaml")) for g in GROUPS}
CASES = [(g, o) for g in GROUPS for o in OPTIONS[g]]
#: options built from official model files that the user supplies under `models_dir`
WEIGHTED = {("embedder", o) for o in ("retina_r100", "retina_r50", "scrfd_r100", "scrfd_r50")} | {
    ("model", "liveportrait"), ("model", "ffwm"), ("model", "deca"),
    *(("enhancer", o) for o in ("gfpgan", "gfpgan_v13", "gfpgan_face", "gfpgan_corrections")),
}


@pytest.fixture(scope="module")
def dataset_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny made-up trees in each dataset's layout (one frame or two photos each)."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("datasets")
    img = np.full((32, 32, 3), 128, np.uint8)
    files = {
        "biwi": ["01/frame_00003_rgb.png"],
        "lfw": ["Ann_Smith/Ann_Smith_0001.jpg", "Ann_Smith/Ann_Smith_0002.jpg"],
        "folder": ["ann/ann_frontal.jpg", "ann/side.jpg"],
    }
    for name, paths in files.items():
        for rel in paths:
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / rel), img)
    (root / "biwi/01/frame_00003_pose.txt").write_text("1 0 0\n0 1 0\n0 0 1\n\n0 0 900\n")
    return {name: root / name for name in files}


@pytest.fixture
def resolved_model_files(monkeypatch, tmp_path) -> list[Path]:
    """Every registry file resolved while the test runs; the default models dir is empty, so
    an option that does not pass `models_dir` on cannot find its files elsewhere."""
    from frontal_exp import weights

    monkeypatch.setenv("FRONTAL_EXP_MODELS", str(tmp_path / "default_models_dir"))
    found: list[Path] = []
    resolve = weights.resolve

    def spy(relpath, models_dir=None):
        found.append(resolve(relpath, models_dir))
        return found[-1]

    monkeypatch.setattr(weights, "resolve", spy)
    return found


def test_groups_have_the_options_the_study_needs():
    assert set(CASES) >= WEIGHTED
    assert {"demo", "biwi", "lfw", "folder"} <= set(OPTIONS["dataset"])
    assert {"scrfd500m_mbf", "retina_r100", "retina_r50", "scrfd_r100", "scrfd_r50"} <= set(OPTIONS["embedder"])
    assert {"identity", "mesh3d"} <= set(OPTIONS["model"])
    assert {"none", "sharp", "omit_bg"} <= set(OPTIONS["enhancer"])


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_instantiates(group, option, make_cfg, official_models, dataset_roots,
                                                resolved_model_files):
    """Each option builds, the weighted ones from official-format files in `models_dir`
    (a missing file is a failure here, never a pass)."""
    from hydra.utils import get_object

    overrides = [f"{group}={option}", f"models_dir={official_models}", "device=cpu"]
    if group == "dataset" and option in dataset_roots:
        overrides.append(f"dataset.root={dataset_roots[option]}")
    cfg = make_cfg(*overrides)
    node = cfg[group]
    check_node(OmegaConf.create(OmegaConf.to_container(node, resolve=True)), group)
    obj = instantiate_checked(node, group)
    assert isinstance(obj, get_object(node._target_))
    # weighted options take their files from models_dir (here official-format ones), the others none
    assert bool(resolved_model_files) == ((group, option) in WEIGHTED), resolved_model_files
    assert all(official_models in path.parents for path in resolved_model_files), resolved_model_files
    if group == "embedder":
        assert obj.name == option
        for part in (obj.detector, obj.recognizer):
            assert part.model_path.is_file()
    if group == "dataset" and option in dataset_roots:
        assert obj.root == str(dataset_roots[option])
    if group in ("model", "enhancer", "embedder"):
        # a cache key can be made (a runtime attribute left out of `runtime_attrs` would raise
        # CacheKeyError only at run time), and it names the code and every model file by content
        key = obj.cache_key()
        assert "|code " in key
        assert all(f"file:{file_identity(path)}" in key for path in resolved_model_files), key


def test_unknown_key_in_an_option_lists_valid_parameters():
    node = OmegaConf.create({"_target_": "frontal_exp.enhancers.simple.Sharpen", "amout": 2.0})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['amout'\].*'amount'"):
        check_node(node, "enhancer")


def test_options_without_parameters_reject_any_key(make_cfg):
    """`+enhancer.foo=1` on an option whose class takes nothing fails with our message, not a TypeError."""
    for group, option in (("enhancer", "none"), ("model", "identity")):
        cfg = make_cfg(f"{group}={option}", f"+{group}.foo=1")
        with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['foo'\].*valid parameters: \[\]"):
            instantiate_checked(cfg[group], group)


def test_added_keys_in_eval_and_tracking_fail_at_start(make_cfg):
    from frontal_exp.evaluation import evaluate

    for key in ("eval.bootstap", "tracking.experment"):
        cfg = make_cfg(f"+{key}=1")
        with pytest.raises(ConfigError, match=rf"unknown key\(s\) \['{key.split('.')[1]}'\].*valid keys"):
            evaluate(cfg)


def test_bad_value_type_fails_at_start(make_cfg):
    cfg = make_cfg("enhancer=sharp", "enhancer.amount=strong")
    with pytest.raises(ConfigError, match="amount"):
        instantiate_checked(cfg.enhancer, "enhancer")


def test_nested_nodes_are_checked(make_cfg):
    cfg = make_cfg("embedder.detector.det_thresh=high")
    with pytest.raises(ConfigError, match=r"embedder.detector.*det_thresh"):
        instantiate_checked(cfg.embedder, "embedder")


def test_unknown_option_and_unknown_key_fail_at_composition(make_cfg):
    with pytest.raises(MissingConfigException, match=r"(?s)enhancer.*Available options.*sharp"):
        make_cfg("enhancer=sharpen")
    with pytest.raises(ConfigCompositionException):
        make_cfg("enhancer.amout=3")
    with pytest.raises(ConfigCompositionException):
        make_cfg("evall.batch_size=3")


def test_top_level_schema_types(make_cfg):
    with pytest.raises(ConfigCompositionException):
        make_cfg("eval.batch_size=many")
    cfg = make_cfg("eval.batch_size=8")
    assert cfg.eval.batch_size == 8


def test_missing_dataset_root_is_a_clear_error(make_cfg):
    from frontal_exp.errors import DatasetError

    cfg = make_cfg("dataset=folder")
    with pytest.raises(ConfigError, match="root"):
        instantiate_checked(cfg.dataset, "dataset")
    cfg = make_cfg("dataset=biwi", "dataset.root=null")
    with pytest.raises(DatasetError, match="BIWI|dataset root|frame_"):
        instantiate_checked(cfg.dataset, "dataset").load()
