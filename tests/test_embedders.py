"""Embedders on real photos, the alignment rule, and the loading path of official files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from frontal_exp.embedders import FaceEmbedder
from frontal_exp.embedders.align import ARCFACE_TEMPLATE_112, alignment_matrix, norm_crop
from frontal_exp.embedders.detectors import InsightFaceDetector, RetinaFaceDetector
from frontal_exp.embedders.packaged import packaged_model_path
from frontal_exp.embedders.recognizers import ArcFaceRecognizer
from frontal_exp.errors import BadWeightsError, MissingWeightsError
from frontal_exp.images import read_image


def test_alignment_maps_keypoints_onto_template():
    rng = np.random.default_rng(0)
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    kps = (ARCFACE_TEMPLATE_112 @ rot.T) * 2.5 + np.array([300.0, 120.0])
    m = alignment_matrix(kps + rng.normal(0, 1e-9, kps.shape))
    mapped = kps @ m[:, :2].T + m[:, 2]
    assert np.allclose(mapped, ARCFACE_TEMPLATE_112, atol=1e-6)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    assert norm_crop(image, kps).shape == (112, 112, 3)


def test_same_person_closer_than_different_people(real_faces, embedder):
    paths = sorted(real_faces.glob("*/*.jpg"))
    images = [read_image(p) for p in paths]
    results = embedder.embed_images(images)
    assert all(r.ok for r in results), [p for p, r in zip(paths, results, strict=True) if not r.ok]
    ids = np.array([p.parent.name for p in paths])
    emb = np.stack([r.embedding for r in results])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    same = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
    diff = ids[:, None] != ids[None, :]
    assert sims[same].mean() > 0.45 and sims[diff].mean() < 0.1
    assert sims[same].mean() - sims[diff].mean() > 0.4
    # rank-1 identification: each photo's nearest other photo is the same person
    np.fill_diagonal(sims, -1)
    assert (ids[sims.argmax(1)] == ids).mean() > 0.9


def test_package_photos_embed_and_batching_matches_single(package_photos, embedder):
    images = [read_image(package_photos[k]) for k in ("astronaut", "grace_hopper", "yao_ming")]
    batch = embedder.embed_images(images)
    single = [embedder.embed(im) for im in images]
    for b, s in zip(batch, single, strict=True):
        assert b.ok and float(b.embedding @ s.embedding) > 0.9999
    sims = np.stack([b.embedding for b in batch]) @ np.stack([b.embedding for b in batch]).T
    assert sims[np.triu_indices(3, 1)].max() < 0.3


def test_tight_aligned_crop_is_found_by_padding(package_photos, embedder):
    """A large aligned crop whose face touches the borders is missed without padding; with
    it the face is found and its keypoints map back onto the crop."""
    import cv2

    image = read_image(package_photos["astronaut"])
    full = embedder.embed(image)
    tight = embedder.align(image, full.face)  # 112x112, the face filling the image
    big = cv2.resize(tight, None, fx=8, fy=8, interpolation=cv2.INTER_CUBIC)  # 896x896
    no_pad = FaceEmbedder(embedder.detector, embedder.recognizer, pad=0.0)
    assert not no_pad.embed(big).ok
    got = embedder.embed(big)
    assert got.ok and float(got.embedding @ full.embedding) > 0.8
    # the keypoints land near the ArcFace template, scaled to the crop: padding was undone
    assert np.abs(got.face.kps - ARCFACE_TEMPLATE_112 * 8).max() < 0.1 * 896


def test_no_face_is_reported(embedder):
    blank = np.full((300, 300, 3), 200, np.uint8)
    result = embedder.embed(blank)
    assert not result.ok and result.reason == "no_face"


def test_huge_image_is_downscaled_before_detection(package_photos, embedder):
    import cv2

    image = read_image(package_photos["grace_hopper"])
    huge = cv2.resize(image, None, fx=8, fy=8, interpolation=cv2.INTER_LINEAR)  # 4800x4096
    small = embedder.embed(image)
    big = embedder.embed(huge)
    assert big.ok and float(big.embedding @ small.embedding) > 0.9
    assert big.face.bbox[2] - big.face.bbox[0] > 6 * (small.face.bbox[2] - small.face.bbox[0])


# -- the loading path of user-supplied official files -----------------------------------


def tiny_arcface_onnx(path: Path, dim: int = 64, seed: int = 0) -> None:
    """An ONNX model with ArcFace's signature (N,3,112,112) -> (N,dim), random weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 7, 7)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (8 * 16 * 16, dim)).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[7, 7]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])],
        [w, fc, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """A models directory laid out like the registry, with test-made models:
    SCRFD in the det_10g slot (the same graph family) and a tiny ArcFace-signature net."""
    root = tmp_path / "models"
    (root / "buffalo_l").mkdir(parents=True)
    shutil.copy(packaged_model_path("scrfd_500m_bnkps.onnx"), root / "buffalo_l" / "det_10g.onnx")
    tiny_arcface_onnx(root / "buffalo_l" / "w600k_r50.onnx")
    return root


def test_registry_files_load_through_the_config_path(models_dir, make_cfg, package_photos):
    from frontal_exp.config import instantiate_checked

    cfg = make_cfg("embedder=scrfd_r50", f"models_dir={models_dir}", "device=cpu")
    emb = instantiate_checked(cfg.embedder, "embedder")
    assert emb.detector.model_path == models_dir / "buffalo_l" / "det_10g.onnx"
    out = emb.embed(read_image(package_photos["astronaut"]))
    assert out.ok and out.embedding.shape == (64,)
    assert np.linalg.norm(out.embedding) == pytest.approx(1.0, abs=1e-5)


def test_missing_official_files_name_file_url_and_command(make_cfg, tmp_path):
    from frontal_exp.config import instantiate_checked

    cfg = make_cfg("embedder=scrfd_r100", f"models_dir={tmp_path / 'empty'}")
    with pytest.raises(MissingWeightsError) as err:
        instantiate_checked(cfg.embedder, "embedder")
    msg = str(err.value)
    assert "antelopev2/scrfd_10g_bnkps.onnx" in msg and "antelopev2/glintr100.onnx" in msg
    assert "https://github.com/deepinsight/insightface/releases" in msg
    assert "python -m frontal_exp.weights download" in msg


def test_retinaface_checkpoint_loads_in_official_format(tmp_path, package_photos):
    """A random-init RetinaFace-R50 saved as the official checkpoint (DataParallel keys)
    loads through RetinaFaceDetector and runs on a real photo."""
    import torch
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name="resnet50", half=False, phase="test", device="cpu")
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    (tmp_path / "facexlib").mkdir()
    torch.save(state, tmp_path / "facexlib" / "detection_Resnet50_Final.pth")
    det = RetinaFaceDetector(models_dir=str(tmp_path), device="cpu", det_thresh=0.0, max_side=320)
    loaded = det._net.state_dict()
    for key in ("body.conv1.weight", "ClassHead.0.conv1x1.weight"):
        assert torch.equal(loaded[key], state[f"module.{key}"])
    # with threshold 0 every anchor passes, so random weights still give boxes to check
    faces = det.detect(read_image(package_photos["astronaut"]))
    assert faces
    for f in faces:
        assert f.bbox.shape == (4,) and f.kps.shape == (5, 2) and 0.0 <= f.det_score <= 1.0


def test_recognizer_rejects_a_non_recognizer(tmp_path):
    with pytest.raises(BadWeightsError, match="scrfd_500m_bnkps.onnx.*not usable as an insightface-format face recognizer"):
        ArcFaceRecognizer(str(packaged_model_path("scrfd_500m_bnkps.onnx")))
    (tmp_path / "w600k_r50.onnx").write_bytes(b"truncated")
    with pytest.raises(BadWeightsError, match=r"w600k_r50.onnx \(9 bytes\).*github.com/deepinsight"):
        ArcFaceRecognizer("buffalo_l/w600k_r50.onnx", models_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="not found"):
        InsightFaceDetector(str(tmp_path / "nothing.onnx"))
