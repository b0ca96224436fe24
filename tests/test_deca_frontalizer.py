"""DECA frontalization on the CPU: texture round trip through UV space, mirror fill, and the
whole frontalizer on real photos with official-format random weights and a synthetic
head-shaped FLAME model (tests/_deca_files.write_head_files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from frontal_exp.errors import MissingWeightsError
from frontal_exp.face3d.render import rasterize_zbuffer, uv_to_pixels
from frontal_exp.frontalizers.deca import DecaFrontalizer
from frontal_exp.frontalizers.deca.frontalizer import crop_matrix
from frontal_exp.frontalizers.deca.texture import extract_texture, fill_hidden, uv_layout

from ._deca_files import ellipsoid_head, write_head_files


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    return write_head_files(tmp_path_factory.mktemp("deca_head"))


@pytest.fixture(scope="module")
def layout():
    verts, faces, vt, ft = ellipsoid_head()
    return uv_layout(vt, ft, faces, verts, 128)


def _screen(scale: float = 900.0, centre=(80.0, 90.0)) -> np.ndarray:
    """The ellipsoid seen from the front: pixel x, y (y down) and depth (smaller = nearer)."""
    verts = ellipsoid_head()[0]
    return np.stack([verts[:, 0] * scale + centre[0], -verts[:, 1] * scale + centre[1],
                     -verts[:, 2] * scale], 1)


def test_mirror_texels_are_mirror_points_of_the_template(layout):
    verts, faces, _, _ = ellipsoid_head()
    pos = layout.draw(verts).reshape(-1, 3)
    covered = np.flatnonzero(layout.raster.mask)
    mirror = layout.mirror.reshape(-1)[covered]
    assert (mirror >= 0).all()
    err = np.abs(pos[mirror] - pos[covered] * [-1, 1, 1]).max()
    assert err < 0.01  # within a texel's extent on a 0.1-sized head
    assert (mirror != covered).mean() > 0.9


def test_texture_round_trip_reproduces_the_visible_face(layout):
    """Photo -> UV (visible texels) -> rendered at the same pose == the photo, up to the
    blur of two bilinear resamplings."""
    faces = ellipsoid_head()[1]
    ys, xs = np.mgrid[0:180, 0:160].astype(np.float32)
    image = np.stack([xs * 1.5, ys * 1.4, 60 + 40 * np.sin(xs / 9) * np.cos(ys / 11)], -1)
    screen = _screen()
    texture, visible = extract_texture(image, screen, faces, layout)
    # the front half is seen, the back is not
    u = (np.arange(128) + 0.5) / 128
    middle = (np.abs(u - 0.5) < 0.2)[:, None]  # rows away from the poles (v = 1 - u here)
    front = layout.raster.mask & (np.abs(u - 0.5) < 0.15)[None, :] & middle
    back = layout.raster.mask & (np.abs(u - 0.5) > 0.35)[None, :]
    assert visible[front].mean() > 0.9 and not visible[back].any()

    zb = rasterize_zbuffer(screen[:, :2], screen[:, 2], faces, image.shape[:2])
    vt, ft = ellipsoid_head()[2:]
    texel = uv_to_pixels(zb.interpolate(vt[ft]).reshape(-1, 2), 128).reshape(*image.shape[:2], 2)
    drawn = cv2.remap(texture, texel[..., 0].astype(np.float32), texel[..., 1].astype(np.float32),
                      cv2.INTER_LINEAR)
    centre = zb.mask & (np.hypot(*np.mgrid[0:180, 0:160][::-1] - np.array([80, 90])[:, None, None]) < 50)
    assert np.abs(drawn[centre] - image[centre]).mean() < 1.5


def test_hidden_texels_take_their_mirror_or_the_mean(layout):
    texture = np.zeros((128, 128, 3), np.float32)
    visible = layout.raster.mask.copy()
    visible[:, 64:] = False  # the right half of the UV map (one side of the head) unseen
    texture[visible] = [10, 20, 30]
    texture[:, 32][visible[:, 32]] = [200, 0, 0]
    filled = fill_hidden(texture, visible, layout)
    mirror = layout.mirror
    hidden = layout.raster.mask & ~visible
    src = mirror[hidden]
    want = np.where(visible.reshape(-1)[src][:, None], texture.reshape(-1, 3)[src], filled[hidden])
    np.testing.assert_array_equal(filled[hidden], want)
    # column 32 mirrors to about column 95: its colour appears there
    assert (filled[:, 93:98, 0] == 200).any()
    np.testing.assert_array_equal(filled[visible], texture[visible])


def test_crop_follows_deca_box_rule():
    pts = np.array([[100.0, 50.0], [200.0, 50.0], [150.0, 190.0]])
    m = crop_matrix(pts, 1.25)
    side = int((100 + 140) / 2 * 1.1 * 1.25)
    corners = np.array([[150 - side / 2, 120 - side / 2, 1], [150 + side / 2, 120 + side / 2, 1]])
    np.testing.assert_allclose((corners @ m.T)[:, :2], [[0, 0], [223, 223]], atol=1e-9)


def test_missing_files_fail_at_construction(tmp_path):
    with pytest.raises(MissingWeightsError, match="deca/generic_model.pkl"):
        DecaFrontalizer(weights_dir=str(tmp_path), device="cpu")


@pytest.fixture(scope="module")
def photo(real_faces):
    return cv2.imread(str(real_faces / "biden" / "biden.jpg"))


@pytest.fixture(scope="module")
def frontalizer(head_dir):
    return DecaFrontalizer(weights_dir=str(head_dir), device="cpu")


def test_frontalizes_a_real_photo_and_changes_only_the_face(frontalizer, photo):
    crop = frontalizer.crop(photo)
    code = frontalizer.encode([crop])
    out = frontalizer.render(photo, crop, code, 0)
    assert out.shape == photo.shape and out.dtype == np.uint8

    # the composite mask, recomputed: outside it the photo is untouched, inside it changed
    frontal_pose = torch.zeros(1, 6)
    frontal_pose[:, 3:] = code["pose"][:1, 3:]
    mesh, lmk = frontalizer.screen_mesh(code, 0, frontal_pose, np.linalg.inv(crop.image_to_crop))
    faces = frontalizer.model.flame.faces.numpy()
    covered = rasterize_zbuffer(mesh[:, :2], mesh[:, 2], faces, photo.shape[:2]).mask
    alpha = frontalizer.face_mask(lmk, covered)
    changed = (out != photo).any(2)
    assert not changed[alpha == 0].any()
    assert not alpha[~covered].any()  # never beyond the rendered head
    assert changed[alpha > 0.5].mean() > 0.5 and (alpha > 0.5).sum() > 2000
    # no seam: the mask fades out before its edge
    edge = (cv2.dilate((alpha > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & (alpha == 0)
    ring = cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert alpha[ring].max() < 0.1
    # the face sits where the detector found it
    ys, xs = np.nonzero(alpha > 0.5)
    (left, top), (right, bottom) = crop.landmarks.min(0), crop.landmarks.max(0)
    assert left - 20 < xs.mean() < right + 20 and top - 40 < ys.mean() < bottom + 20

    assert np.array_equal(frontalizer(photo), out)  # __call__ is these steps


def test_options_batch_and_cache_key(frontalizer, head_dir, photo):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    crop_only = DecaFrontalizer(weights_dir=str(head_dir), device="cpu", paste_back=False, keep_jaw=False)
    results = crop_only.frontalize_batch([photo, noise])
    assert results[0].shape == (224, 224, 3)
    assert isinstance(results[1], Exception)
    assert frontalizer.cache_key() != crop_only.cache_key()
    assert frontalizer.cache_key() == DecaFrontalizer(weights_dir=str(head_dir), device="cpu").cache_key()


def test_deca_runs_from_the_command_line_paths(head_dir, make_cfg, tmp_path, real_faces, tmp_path_factory):
    """`model=deca model.weights_dir=...` in an evaluation on real photos, logged to MLflow,
    and in the inference CLI (official-format random weights, synthetic FLAME head)."""
    from mlflow import MlflowClient

    from frontal_exp.evaluation import evaluate
    from frontal_exp.infer import main as infer
    from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
    from tests.conftest import mlflow_db

    out_root = mlflow_db(tmp_path / "o" / "mlflow.db", tmp_path_factory).parent  # the schema made
    cfg = make_cfg("model=deca", f"model.weights_dir={head_dir}", "device=cpu", "dataset=folder",
                   f"dataset.root={real_faces}", "dataset.gt=first", "dataset.limit=3",
                   "dataset.estimate_pose=false", "eval.bootstrap=20", "eval.grid_samples=2",
                   "protocol.analyses=[]", output_root=out_root)
    result = evaluate(cfg)
    m = result.metrics
    assert result.params["model"] == "deca" and result.params["model_device"] == "cpu"
    assert m["n_items"] >= 3 and m["frontalize_failed"] == 0
    assert m["frontalized_computed"] == m["n_items"]
    # the photo around the face is kept, so the frontal keeps a detectable face
    assert m["n"] + m["not_paired"] == m["n_items"] and m["n"] >= 1
    run = MlflowClient(default_sqlite_uri(out_root)).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["n"] == m["n"]
    assert run.data.params["model._target_"].endswith("DecaFrontalizer")

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    image = cv2.imread(str(real_faces / "biden" / "biden.jpg"))
    cv2.imwrite(str(src / "face.png"), image)
    assert infer(["--source_dir", str(src), "-o", str(out), "--frontalize", "model=deca",
                  f"model.weights_dir={head_dir}", "device=cpu"]) == 0
    written = cv2.imread(str(out / "face.png"))
    assert written.shape == image.shape and (written != image).any()
