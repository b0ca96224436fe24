"""DECA's detail branch on a photo texture (detail normals, SH shading, the shading ratio) and
the seamless composite: analytic checks, then the frontalizer on a real photo with
official-format random weights and the ellipsoid head (tests/_deca_files.write_head_files)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from frontal_exp.errors import ConfigError, MissingWeightsError
from frontal_exp.frontalizers.deca import DecaFrontalizer
from frontal_exp.frontalizers.deca.blend import poisson_blend
from frontal_exp.frontalizers.deca.detail import (
    MAX_GAIN,
    SH_FACTORS,
    detail_gain,
    detail_normals,
    grid_triangles,
    sh_shading,
)

from ._deca_files import detail_normal_inputs, write_head_files

# -- detail normals and shading ----------------------------------------------------------------


def _plane(size: int = 48, spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """A flat UV-mapped plane z = 0 (row up = y up, as DECA's UV maps) and its normals +z."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    verts = np.stack([cols * spacing, -rows * spacing, np.zeros_like(rows)], -1)
    return verts, np.broadcast_to([0.0, 0.0, 1.0], verts.shape).copy()


def _bump(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian bump 2 cm high, 6 cm wide, on a 48 cm square sampled `size` times: the
    displacement and its analytic unit normals (-f_x, -f_y, 1) / norm."""
    h = 0.48 / size
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = cols * h, -rows * h
    sigma, amp = 0.06, 0.02
    bump = amp * np.exp(-((x - 0.24) ** 2 + (y + 0.24) ** 2) / (2 * sigma ** 2))
    fx, fy = -bump * (x - 0.24) / sigma ** 2, -bump * (y + 0.24) / sigma ** 2
    want = np.stack([-fx, -fy, np.ones_like(fx)], -1)
    return bump, want / np.linalg.norm(want, axis=-1, keepdims=True)


def test_grid_triangles_follow_deca_dense_mesh():
    tris = grid_triangles(12, 10)
    assert len(tris) == 2 * (10 - 1 - 4) * (12 - 1 - 10)
    w = 10
    first = 5 * w + 2  # the first square: column 2, row 5 (margins 2 and 5)
    np.testing.assert_array_equal(tris[:2], [[first, first + w, first + 1], [first + 1, first + w, first + w + 1]])


def test_detail_normals_of_a_bump_on_a_plane_are_its_analytic_normals():
    errors = []
    for size in (48, 96):
        verts, normals = _plane(size, 0.48 / size)
        bump, want = _bump(size)
        got = detail_normals(verts, normals, bump, np.zeros((size, size)), np.ones((size, size)))
        inner = (slice(size // 6, size - size // 6),) * 2
        errors.append(np.abs(got[inner] - want[inner]).max())
        assert np.degrees(np.arccos(want[inner][..., 2])).max() > 10  # well tilted
    # the discrete normals converge to the analytic ones, at second order in the texel size
    assert errors[0] < 3.5e-3 and errors[1] < errors[0] / 3.5

    size = 48
    verts, normals = _plane(size, 0.01)
    bump, _ = _bump(size)
    mask = np.ones((size, size))
    got = detail_normals(verts, normals, bump, np.zeros((size, size)), mask)
    inner = (slice(8, 40), slice(8, 40))
    # no displacement: the plane's own normal; outside the mask the coarse normals whatever
    # the displacement
    flat = detail_normals(verts, normals, np.zeros((size, size)), np.zeros((size, size)), mask)
    np.testing.assert_allclose(flat[inner], normals[inner], atol=1e-12)
    half = mask.copy()
    half[:, :24] = 0
    masked = detail_normals(verts, normals, bump, np.zeros((size, size)), half)
    np.testing.assert_array_equal(masked[:, :24], normals[:, :24])
    # the fixed correction displaces as D_detail's output does
    fixed = detail_normals(verts, normals, np.zeros((size, size)), bump, mask)
    np.testing.assert_allclose(fixed, got, atol=1e-12)


def test_sh_shading_uses_deca_basis_and_factors():
    n = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    light = np.zeros((9, 3))
    light[0] = [1.0, 2.0, 3.0]  # ambient
    np.testing.assert_allclose(sh_shading(n, light), np.tile(SH_FACTORS[0] * light[0], (3, 1)))
    light = np.zeros((9, 3))
    light[3, 0] = 1.0  # linear in z, red only
    light[7, 1] = 1.0  # x^2 - y^2, green only
    light[8, 2] = 1.0  # 3 z^2 - 1, blue only
    got = sh_shading(n, light)
    np.testing.assert_allclose(got[:, 0], SH_FACTORS[3] * n[:, 2])
    np.testing.assert_allclose(got[:, 1], SH_FACTORS[7] * (n[:, 0] ** 2 - n[:, 1] ** 2))
    np.testing.assert_allclose(got[:, 2], SH_FACTORS[8] * (3 * n[:, 2] ** 2 - 1))
    np.testing.assert_allclose(SH_FACTORS[:4], [0.2820948, 1.0233267, 1.0233267, 1.0233267], rtol=1e-6)


def test_detail_gain_is_one_without_displacement_and_bounded_with_it():
    d = detail_normal_inputs()
    size = d["mask"].shape[0]
    light = np.zeros((9, 3))
    light[0], light[3] = 3.0, 1.5  # ambient + light from the front, positive everywhere
    args = (d["uv_vertices"], d["uv_normals"])
    none = detail_gain(*args, np.zeros((size, size)), d["fixed_displacement"], d["mask"], light)
    np.testing.assert_array_equal(none, 1.0)
    gain = detail_gain(*args, d["displacement"], d["fixed_displacement"], d["mask"], light)
    outside = d["mask"] == 0
    np.testing.assert_array_equal(gain[outside], 1.0)
    assert gain.min() >= 1 / MAX_GAIN and gain.max() <= MAX_GAIN
    assert np.abs(gain[~outside] - 1).mean() > 0.01  # the displacement does shade the face


# -- Poisson blending --------------------------------------------------------------------------


def _scene(h: int = 90, w: int = 110):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    target = np.stack([60 + xs, 40 + ys, 120 + 20 * np.sin(xs / 7)], -1)
    source = np.stack([150 + 30 * np.sin(ys / 5), 30 + 0 * xs, 200 - xs / 2], -1)
    region = ((xs - 55) / 30) ** 2 + ((ys - 45) / 25) ** 2 < 1
    return source, target, region


def test_poisson_blend_keeps_outside_and_source_gradients_inside():
    source, target, region = _scene()
    out = poisson_blend(source, target, region)
    np.testing.assert_array_equal(out[~region], target[~region])
    # a source that differs from the target by a constant is absorbed entirely
    np.testing.assert_allclose(poisson_blend(target + 70, target, region), target, atol=1e-9)
    # inside, the result is the source plus a harmonic correction: its discrete Laplacian
    # equals the source's away from the border
    def lap(a):
        return 4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]
    inner = cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8))[1:-1, 1:-1] > 0
    np.testing.assert_allclose(lap(out)[inner], lap(source)[inner], atol=1e-8)


def test_poisson_blend_leaves_a_smaller_seam_than_a_hard_paste():
    source, target, region = _scene()
    hard = np.where(region[..., None], source, target)
    soft = poisson_blend(source, target, region)
    edge = region & ~(cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)

    def seam(img):  # mean |step| from each edge pixel of the region to its outside neighbours
        steps = []
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nb = np.roll(img, (-dy, -dx), (0, 1))
            out = np.roll(~region, (-dy, -dx), (0, 1)) & edge
            steps.append(np.abs(img - nb)[out].mean())
        return float(np.mean(steps))

    assert seam(soft) < 0.2 * seam(hard)
    assert seam(soft) < 3  # about the target's own gradient (1 per pixel)


def test_poisson_blend_refuses_empty_and_border_regions():
    source, target, region = _scene()
    assert poisson_blend(source, target, np.zeros_like(region)) is None
    touching = region.copy()
    touching[40:50, 0:5] = True
    assert poisson_blend(source, target, touching) is None


# -- the frontalizer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    return write_head_files(tmp_path_factory.mktemp("deca_detail"))


@pytest.fixture(scope="module")
def flat_detail_dir(head_dir, tmp_path_factory):
    """The same files with D_detail's last convolution zeroed: a displacement of exactly 0."""
    root = tmp_path_factory.mktemp("deca_flat_detail")
    for f in head_dir.iterdir():
        shutil.copy(f, root / f.name)
    state = torch.load(root / "deca_model.tar", weights_only=True)
    last = max(int(k.split(".")[1]) for k in state["D_detail"] if k.startswith("conv_blocks.")
               and k.endswith(".weight") and state["D_detail"][k].ndim == 4)
    for key in (f"conv_blocks.{last}.weight", f"conv_blocks.{last}.bias"):
        state["D_detail"][key] = torch.zeros_like(state["D_detail"][key])
    torch.save(state, root / "deca_model.tar")
    return root


@pytest.fixture(scope="module")
def photo(real_faces):
    return cv2.imread(str(real_faces / "biden" / "biden.jpg"))


@pytest.fixture(scope="module")
def frontals(head_dir, flat_detail_dir, photo):
    """(photo, alpha) and the alpha-blended frontals without detail, with it, and with a
    zero displacement; all from the same crop."""
    make = {"off": (head_dir, False), "on": (head_dir, True), "flat": (flat_detail_dir, True)}
    out = {}
    for name, (root, detail) in make.items():
        fr = DecaFrontalizer(weights_dir=str(root), device="cpu", detail=detail, blend="alpha")
        crop = fr.crop(photo)
        code = fr.encode([crop])
        drawn, background, alpha = fr.draw(photo, crop, code, 0)
        out[name] = fr.composite(drawn, background, alpha)
        out["alpha"] = alpha
        if detail and name == "on":
            out["displacement"] = code["displacement"]
            out["detailed"] = (fr, code)
    return out


def test_detail_gain_is_per_colour_and_in_bgr(frontals):
    """DECA's light is RGB: a light in red only changes only the texture's last (red) channel."""
    fr, code = frontals["detailed"]
    light = torch.zeros_like(code["light"])
    light[:, 0, 0], light[:, 3, 0] = 3.0, 1.5
    gain = fr.detail_gain({**code, "light": light}, 0)
    np.testing.assert_array_equal(gain[..., :2], 1.0)
    assert (gain[..., 2] != 1).mean() > 0.05


def test_detail_changes_only_the_face_and_by_a_bounded_amount(frontals, photo):
    on, off, alpha = frontals["on"].astype(np.float64), frontals["off"].astype(np.float64), frontals["alpha"]
    assert np.abs(frontals["displacement"]).max() > 1e-3  # D_detail does displace
    changed = (on != off).any(2)
    assert not changed[alpha == 0].any()
    face = alpha > 0.99
    assert changed[face].mean() > 0.2  # wrinkle shading shows on the face
    # the texture is scaled by at most MAX_GAIN either way (+1 for rounding)
    lit = face[..., None] & (off > 20)
    ratio = on[lit] / off[lit]
    assert ratio.min() >= 1 / MAX_GAIN - 0.05 and ratio.max() <= MAX_GAIN + 0.05
    assert np.abs(on - off)[face].mean() < 40


def test_zero_displacement_gives_the_same_frontal_as_no_detail(frontals):
    np.testing.assert_array_equal(frontals["flat"], frontals["off"])


@pytest.fixture(scope="module")
def seamless(head_dir):
    return DecaFrontalizer(weights_dir=str(head_dir), device="cpu")


def test_seamless_composite_changes_only_the_mask_and_removes_the_seam(seamless, photo):
    assert seamless.blend == "seamless" and not seamless.detail  # the defaults
    crop = seamless.crop(photo)
    drawn, background, alpha = seamless.draw(photo, crop, seamless.encode([crop]), 0)
    out = seamless.composite(drawn, background, alpha).astype(np.float64)
    assert seamless.blend_fallbacks == 0
    support = alpha > 0
    np.testing.assert_array_equal(out[~support], photo[~support])
    assert (out != photo)[support].any(1).mean() > 0.5

    # a hard mask (the support, 0 / 1): the alpha composite is then a hard paste; the
    # seamless one carries the photo's colour across the edge
    hard_alpha = support.astype(np.float32)
    hard = seamless.composite(drawn, background, hard_alpha).astype(np.float64)
    assert seamless.blend_fallbacks == 0
    pasted = np.where(support[..., None], np.clip(np.rint(drawn), 0, 255), photo).astype(np.float64)
    np.testing.assert_array_equal(hard[~support], photo[~support])
    edge = support & ~(cv2.erode(support.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    outside = (cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~support

    def step(img):  # mean |edge pixels near by - pixel| over the pixels just outside the edge
        weight = np.maximum(cv2.blur(edge.astype(np.float64), (3, 3)), 1e-9)[..., None]
        inner = cv2.blur(np.where(edge[..., None], img, 0), (3, 3)) / weight
        return np.abs(inner[outside] - img[outside]).mean()

    assert step(hard) < 0.5 * step(pasted)
    assert step(pasted) > 10  # the drawn face's colour does differ from the photo's


def test_seamless_falls_back_to_alpha_at_the_border_and_counts_it(head_dir):
    fr = DecaFrontalizer(weights_dir=str(head_dir), device="cpu")
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    drawn = np.full((40, 50, 3), 200, np.float32)
    alpha = np.zeros((40, 50), np.float32)
    alpha[0:20, 10:30] = 0.7  # touches the top row
    out = fr.composite(drawn, background, alpha)
    want = np.clip(np.rint(alpha[..., None] * drawn + (1 - alpha[..., None]) * background), 0, 255)
    np.testing.assert_array_equal(out, want.astype(np.uint8))
    assert fr.blend_fallbacks == 1
    np.testing.assert_array_equal(fr.composite(drawn, background, np.zeros_like(alpha)), background)
    assert fr.blend_fallbacks == 2


def test_options_files_and_cache_keys(head_dir, tmp_path):
    with pytest.raises(ConfigError, match="blend"):
        DecaFrontalizer(weights_dir=str(head_dir), device="cpu", blend="poisson")
    partial = tmp_path / "deca"
    shutil.copytree(head_dir, partial)
    (partial / "fixed_displacement_256.npy").unlink()
    DecaFrontalizer(weights_dir=str(partial), device="cpu")  # detail off: not needed
    with pytest.raises(MissingWeightsError, match="fixed_displacement_256.npy"):
        DecaFrontalizer(weights_dir=str(partial), device="cpu", detail=True)
    keys = {DecaFrontalizer(weights_dir=str(head_dir), device="cpu", detail=d, blend=b).cache_key()
            for d in (False, True) for b in ("seamless", "alpha")}
    assert len(keys) == 4
