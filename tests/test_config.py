"""Every config option composes and instantiates; typos and bad values fail at start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from frontal_exp.app import CONFIG_DIR
from frontal_exp.config import GROUPS, check_node, instantiate_checked
from frontal_exp.embedders.packaged import packaged_model_path
from frontal_exp.errors import ConfigError, MissingWeightsError

OPTIONS = {g: sorted(p.stem for p in (Path(CONFIG_DIR) / g).glob("*.yaml")) for g in GROUPS}
CASES = [(g, o) for g in GROUPS for o in OPTIONS[g]]


@pytest.fixture(scope="module")
def embedder_models(tmp_path_factory) -> Path:
    """Every embedder file of the registry, made by the tests (no downloads)."""
    import torch
    from facexlib.detection.retinaface import RetinaFace

    from tests.test_embedders import tiny_arcface_onnx

    root = tmp_path_factory.mktemp("models")
    for pack, det, rec in (("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"),
                           ("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx")):
        (root / pack).mkdir()
        shutil.copy(packaged_model_path("scrfd_500m_bnkps.onnx"), root / pack / det)
        tiny_arcface_onnx(root / pack / rec)
    (root / "facexlib").mkdir()
    net = RetinaFace(network_name="resnet50", half=False, phase="test", device="cpu")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()},
               root / "facexlib" / "detection_Resnet50_Final.pth")
    return root


def test_groups_have_the_options_the_study_needs():
    assert {"demo", "biwi", "lfw", "folder"} <= set(OPTIONS["dataset"])
    assert {"scrfd500m_mbf", "retina_r100", "retina_r50", "scrfd_r100", "scrfd_r50"} <= set(OPTIONS["embedder"])
    assert {"identity", "mesh3d"} <= set(OPTIONS["model"])
    assert {"none", "sharp", "omit_bg"} <= set(OPTIONS["enhancer"])


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_instantiates(group, option, make_cfg, embedder_models, tmp_path):
    overrides = [f"{group}={option}", f"models_dir={embedder_models}", "device=cpu"]
    if group == "dataset" and option in ("biwi", "lfw", "folder"):
        overrides.append(f"dataset.root={tmp_path}")
    cfg = make_cfg(*overrides)
    node = cfg[group]
    check_node(OmegaConf.create(OmegaConf.to_container(node, resolve=True)), group)
    try:
        obj = instantiate_checked(node, group)
    except MissingWeightsError as exc:
        # options whose official weights the user supplies say what is missing and where to get it
        assert group in ("model", "enhancer"), f"{group}={option} should build from the test models"
        assert "http" in str(exc) and "python -m frontal_exp.weights" in str(exc)
        return
    assert obj is not None
    if group == "embedder":
        assert obj.name == option


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
