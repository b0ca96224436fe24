"""Face mesh, head pose and mesh renderer on real packaged photos and synthetic meshes."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from frontal_exp.errors import FrontalizationError
from frontal_exp.face3d import (
    HeadPose,
    estimate_head_pose,
    euler_from_rotation,
    get_face_mesh,
    mesh_triangles,
    pose_from_landmarks,
    rasterize,
    render_mesh,
    rotation_from_euler,
)
from frontal_exp.face3d.canonical import canonical_mesh, mirror_index


def _pkg(package: str, *parts: str) -> Path:
    return Path(str(resources.files(package).joinpath(*parts)))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return cv2.imread(str(_pkg("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")))


def real_faces_dir() -> Path | None:
    env = os.environ.get("FRONTAL_EXP_REAL_FACES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared/data/real_faces")
    return next((p for p in candidates if p.is_dir()), None)


# -- mesh topology and canonical shape ------------------------------------------------------
def test_triangles_cover_the_mesh_and_face_the_camera():
    tris = mesh_triangles()
    assert tris.shape == (852, 3)
    assert set(np.unique(tris)) == set(range(468))
    c = canonical_mesh()
    normal_z = np.cross(c[tris[:, 1]] - c[tris[:, 0]], c[tris[:, 2]] - c[tris[:, 0]])[:, 2]
    assert (normal_z < 0).mean() > 0.99


def test_canonical_mesh_is_mirror_symmetric():
    c, m = canonical_mesh(), mirror_index()
    assert np.array_equal(m[m], np.arange(478))
    assert np.allclose(c * [-1, 1, 1], c[m], atol=1e-4)
    assert 20 <= int((m == np.arange(478)).sum()) <= 40  # the midline points
    assert c[1, 2] < c[234, 2]  # nose tip nearer to the camera than the cheek edge


# -- pose ---------------------------------------------------------------------------------
@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, -10, 5), (-45, 20, -15), (70, 0, 0)])
def test_euler_round_trip(yaw, pitch, roll):
    assert np.allclose(euler_from_rotation(rotation_from_euler(yaw, pitch, roll)), (yaw, pitch, roll))


def test_euler_sign_convention():
    forward = np.array([0.0, 0.0, -1.0])  # canonical face looks at the camera (-z)
    assert (rotation_from_euler(30, 0, 0) @ forward)[0] > 0  # yaw>0: nose to image right
    assert (rotation_from_euler(0, 30, 0) @ forward)[1] < 0  # pitch>0: nose up (y is down)
    up = np.array([0.0, -1.0, 0.0])
    assert (rotation_from_euler(0, 0, 30) @ up)[0] > 0  # roll>0: head top to image right


def test_pose_from_landmarks_recovers_a_known_pose():
    rot = rotation_from_euler(25, -10, 8)
    lm = 180.0 * canonical_mesh() @ rot.T + [320, 240, 0]
    fit = pose_from_landmarks(lm)
    assert np.allclose((fit.pose.yaw, fit.pose.pitch, fit.pose.roll), (25, -10, 8), atol=0.1)
    assert fit.scale == pytest.approx(180.0, rel=1e-3)


def test_angle_from_frontal_ranks_poses():
    assert HeadPose(0, 0, 20).angle_from_frontal == pytest.approx(0, abs=1e-6)
    assert HeadPose(40, 0, 0).angle_from_frontal > HeadPose(10, 10, 0).angle_from_frontal


def test_packaged_portraits_are_near_frontal(astronaut, grace):
    for image in (astronaut, grace):
        pose = estimate_head_pose(image)
        assert pose is not None
        assert abs(pose.yaw) < 8 and abs(pose.pitch) < 15 and abs(pose.roll) < 10


def test_landmarks_are_in_pixels(astronaut):
    lm = get_face_mesh().landmarks(astronaut)
    assert lm.shape == (478, 3)
    x0, y0 = lm[:, :2].min(0)
    x1, y1 = lm[:, :2].max(0)
    # the astronaut's face is roughly x 180-270, y 70-180 in the 512x512 photo
    assert 150 < x0 < 200 and 240 < x1 < 300 and 40 < y0 < 100 and 150 < y1 < 200


def test_small_faces_in_a_group_photo_need_a_box():
    image = cv2.imread(str(_pkg("insightface", "data", "images", "t1.jpg")))
    mesh = get_face_mesh()
    whole = mesh.detect(image)  # whole image fails in FaceMesh; the SCRFD fallback finds one
    assert whole is not None
    x0, y0 = whole[:, :2].min(0)
    x1, y1 = whole[:, :2].max(0)
    boxed = mesh.detect(image, (x0, y0, x1, y1))
    assert boxed is not None
    assert np.abs(boxed[:, :2] - whole[:, :2]).mean() < 3.0


def test_no_face():
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert estimate_head_pose(blank) is None
    with pytest.raises(FrontalizationError, match="no face mesh"):
        get_face_mesh().landmarks(blank)


def test_mesh_pose_ranks_a_three_quarter_view_as_less_frontal():
    root = real_faces_dir()
    if root is None:
        pytest.skip("real_faces not found (../shared/data/real_faces or $FRONTAL_EXP_REAL_FACES)")
    folder = root / "lin_manuel_miranda"
    near = estimate_head_pose(cv2.imread(str(folder / "hamilton_0180.jpg")))
    three_quarter = estimate_head_pose(cv2.imread(str(folder / "hamilton_0210.jpg")))
    assert near is not None and three_quarter is not None
    assert three_quarter.yaw < -20  # turned toward the image's left
    assert three_quarter.angle_from_frontal > near.angle_from_frontal + 15


# -- renderer -------------------------------------------------------------------------------
def _grid_mesh(n: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.linspace(0, size, n)
    xs, ys = np.meshgrid(g, g)
    verts = np.stack([xs.ravel(), ys.ravel()], 1)
    tris = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, c = i * n + j, (i + 1) * n + j
            tris += [(a, c, a + 1), (a + 1, c, c + 1)]  # counter-clockwise on screen = front
    return verts, np.array(tris)


def test_identity_warp_reproduces_the_image(astronaut):
    verts, tris = _grid_mesh(9, 511)
    out, mask = render_mesh(astronaut, verts, verts, tris, astronaut.shape[:2])
    assert mask.all()
    assert np.array_equal(out, astronaut)


def test_translation_warp_shifts_the_image(astronaut):
    verts, tris = _grid_mesh(9, 511)
    out, mask = render_mesh(astronaut, verts, verts + [12, 7], tris, astronaut.shape[:2])
    assert np.array_equal(out[100:400, 100:400], astronaut[93:393, 88:388])
    assert not mask[:7].any() and not mask[:, :12].any()


def test_nearer_triangle_wins():
    src = np.zeros((50, 100, 3), np.uint8)
    src[:, :50] = 60
    src[:, 50:] = 200
    # two triangles drawn on the same place, sampling the dark and the bright half
    dst = np.array([[10, 10], [40, 10], [10, 40]] * 2, float)
    src_xy = np.array([[5, 5], [20, 5], [5, 20], [60, 5], [75, 5], [60, 20]], float)
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    for near_bright, expected in ((True, 200), (False, 60)):
        depth = np.array([5, 5, 5, 1, 1, 1] if near_bright else [1, 1, 1, 5, 5, 5], float)
        out, _ = render_mesh(src, src_xy, dst, tris, (50, 50), dst_depth=depth)
        assert out[15, 15, 0] == expected


def test_backfaces_are_culled():
    xy = np.array([[10, 10], [40, 10], [10, 40]], float)
    front = rasterize(xy, np.zeros(3), np.array([[0, 2, 1]]), (50, 50))
    back = rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), (50, 50))
    assert front.mask.sum() > 300 and back.mask.sum() == 0
    bary_sum = front.interpolate(np.ones(3))
    assert np.allclose(bary_sum, 1.0, atol=1e-4)
