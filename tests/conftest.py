"""Shared fixtures: composed configs, real photos (packaged and ../shared), small trees."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from frontal_exp.app import CONFIG_DIR
from frontal_exp.config import register_configs

REPO = Path(__file__).resolve().parents[1]


def real_faces_root() -> Path | None:
    env = os.environ.get("FRONTAL_EXP_REAL_FACES")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared/data/real_faces"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def real_faces() -> Path:
    root = real_faces_root()
    if root is None:
        pytest.skip("../shared/data/real_faces is not present (set FRONTAL_EXP_REAL_FACES)")
    return root


@pytest.fixture(scope="session")
def package_photos() -> dict[str, Path]:
    from frontal_exp.data.demo import package_photos

    return package_photos()


@pytest.fixture(scope="session")
def embedder():
    """The embedded detector + recognizer pair (SCRFD-500M + MobileFaceNet), CPU."""
    from frontal_exp.embedders import FaceEmbedder
    from frontal_exp.embedders.detectors import InsightFaceDetector
    from frontal_exp.embedders.recognizers import ArcFaceRecognizer

    return FaceEmbedder(
        InsightFaceDetector("packaged:scrfd_500m_bnkps.onnx", device="cpu"),
        ArcFaceRecognizer("packaged:w600k_mbf.onnx", device="cpu"),
        name="scrfd500m_mbf",
    )


def compose_config(overrides: list[str], output_root: Path, hydra_config: bool = False) -> DictConfig:
    """Compose the app's config as `python -m frontal_exp <overrides>` would."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"output_root={output_root}", *overrides],
            return_hydra_config=hydra_config,
        )
    if hydra_config:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def _make(*overrides: str, output_root: Path | None = None, hydra_config: bool = False) -> DictConfig:
        return compose_config(list(overrides), output_root or tmp_path / "outputs", hydra_config)

    return _make


def face_crop(path: Path, embedder, size: int = 200, grow: float = 2.0) -> np.ndarray:
    """A square crop around the largest face of a photo."""
    from frontal_exp.data.demo import crop_square
    from frontal_exp.images import read_image

    image = read_image(path)
    face = embedder.find_face(image)
    assert face is not None, path
    return crop_square(image, face.bbox, grow, size)


@pytest.fixture(scope="session")
def identity_tree(tmp_path_factory, package_photos, embedder) -> Path:
    """A folder-per-identity tree of real faces from package photos: each identity has a
    'frontal' GT and two variants (a flipped and a rescaled copy). Small and offline."""
    import cv2

    from frontal_exp.images import write_image

    root = tmp_path_factory.mktemp("identities")
    for name in ("astronaut", "grace_hopper", "yao_ming"):
        crop = face_crop(package_photos[name], embedder)
        write_image(root / name / "frontal.png", crop)
        write_image(root / name / "flip.jpg", cv2.flip(crop, 1))
        small = cv2.resize(crop, (120, 120), interpolation=cv2.INTER_AREA)
        write_image(root / name / "small.jpg", small)
    return root


# -- model files in the official formats (random init of the real architectures) -------------


@pytest.fixture(scope="session")
def gfpgan_models(tmp_path_factory) -> Path:
    """A models dir laid out like the registry, holding randomly initialised official-format files:
    GFPGANv1Clean under `params_ema`, RetinaFace-R50 with DataParallel's "module." keys (as
    facexlib publishes it) and ParseNet as a plain state dict."""
    import torch
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.parsenet import ParseNet

    from frontal_exp.enhancers.gfpgan import build_gfpgan_net

    root = tmp_path_factory.mktemp("models")
    (root / "gfpgan").mkdir()
    (root / "facexlib").mkdir()
    torch.manual_seed(0)
    torch.save({"params_ema": build_gfpgan_net().state_dict()}, root / "gfpgan/GFPGANv1.4.pth")
    # v1.3 has the same architecture; one random file serves both
    os.link(root / "gfpgan/GFPGANv1.4.pth", root / "gfpgan/GFPGANv1.3.pth")
    det = RetinaFace(network_name="resnet50", half=False, phase="test", device="cpu")
    torch.save({f"module.{k}": v for k, v in det.state_dict().items()},
               root / "facexlib/detection_Resnet50_Final.pth")
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(),
               root / "facexlib/parsing_parsenet.pth")
    return root


@pytest.fixture(scope="session")
def lp_random(tmp_path_factory):
    """LivePortrait's random-init networks saved once in the official layout; (models_dir, state dicts)."""
    import torch

    from frontal_exp.frontalizers.liveportrait import checkpoints
    from frontal_exp.frontalizers.liveportrait.modules import build_networks, randomize_

    nets = build_networks()
    gen = torch.Generator().manual_seed(0)
    for module in nets.modules().values():
        randomize_(module, gen)
    root = tmp_path_factory.mktemp("lp_models")
    checkpoints.save_networks(nets, root)
    states = {name: m.state_dict() for name, m in nets.modules().items()}
    return root, states


@pytest.fixture(scope="session")
def official_models(tmp_path_factory, gfpgan_models, lp_random) -> Path:
    """One models dir holding every file of the weights registry in its official format:
    the GFPGAN / facexlib and LivePortrait files above (hard links, no copies), and the
    insightface packs made of the embedded SCRFD-500M graph (same family as det_10g and
    scrfd_10g) and tiny ArcFace-signature recognizers."""
    import shutil

    from frontal_exp import weights
    from frontal_exp.embedders.packaged import packaged_model_path
    from tests.test_embedders import tiny_arcface_onnx

    root = tmp_path_factory.mktemp("official_models")
    for source in (gfpgan_models, lp_random[0]):
        for f in (f for f in source.rglob("*") if f.is_file()):
            target = root / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
    for pack, det, rec in (("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"),
                           ("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx")):
        (root / pack).mkdir()
        shutil.copy(packaged_model_path("scrfd_500m_bnkps.onnx"), root / pack / det)
        tiny_arcface_onnx(root / pack / rec)
    from frontal_exp.frontalizers.ffwm import checkpoints as ffwm_checkpoints
    from frontal_exp.frontalizers.ffwm.networks import build_networks as build_ffwm

    ffwm_checkpoints.save_networks(build_ffwm(), root)  # FFWM's two files, random init
    from tests._deca_files import write_head_files

    write_head_files(root / "deca", seeded=False)  # DECA's four files, a synthetic FLAME
    weights.resolve_all(list(weights.REGISTRY), root)  # every registry file is there
    return root
