"""DECA's detail on a photo texture: D_detail's UV displacement turned into detail normals (as
DECA's `displacement2normal`), shaded with the fitted spherical-harmonics light, and applied
to the photo's texture as the ratio shading(detail) / shading(no detail), so the predicted
wrinkles appear while the photo's own shading is not applied a second time."""

from __future__ import annotations

import numpy as np

from .texture import vertex_normals

#: DECA's SH basis factors (renderer.SRenderY): the irradiance convolution of the 9 real SH
#: basis functions, bands 0, 1, 1, 1, 2, 2, 2, 2, 2
SH_FACTORS = np.array([
    1 / np.sqrt(4 * np.pi),
    *[(2 * np.pi / 3) * np.sqrt(3 / (4 * np.pi))] * 3,
    *[(np.pi / 4) * 3 * np.sqrt(5 / (12 * np.pi))] * 3,
    (np.pi / 4) * (3 / 2) * np.sqrt(5 / (12 * np.pi)),
    (np.pi / 4) * (1 / 2) * np.sqrt(5 / (4 * np.pi)),
])
#: DECA normalises the dense normals with F.normalize's eps: shorter sums stay shorter
NORMAL_EPS = 1e-6
#: DECA's dense UV mesh leaves this many texel columns / rows out at each side
GRID_MARGIN = (2, 5)
#: the texture is multiplied by at most this factor and at least its inverse
MAX_GAIN = 2.0
#: a coarse shading this close to zero (a channel the light leaves dark) gets no detail
MIN_SHADING = 1e-3


def sh_shading(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Irradiance (..., 3) at unit `normals` (..., 3) under DECA's 27 light parameters (9, 3)
    (x right, y up, z towards the camera, as FLAME's world frame)."""
    n = np.asarray(normals, np.float64)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    basis = np.stack([np.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    return (basis * SH_FACTORS) @ np.asarray(light, np.float64).reshape(9, 3)


def grid_triangles(height: int, width: int, margin: tuple[int, int] = GRID_MARGIN) -> np.ndarray:
    """Two triangles per texel square of an HxW grid (vertex = row * width + column), all
    squares but `margin` (columns, rows) at the sides, wound as DECA's dense UV mesh."""
    mx, my = margin
    cols, rows = np.meshgrid(np.arange(mx, width - 1 - mx), np.arange(my, height - 1 - my), indexing="ij")
    top = (rows * width + cols).reshape(-1)
    quads = np.stack([top, top + 1, top + width, top + width + 1], 1)
    tris = np.stack([quads[:, [0, 2, 1]], quads[:, [1, 2, 3]]], 1)  # (N, 2, 3)
    return tris.reshape(-1, 3)


def detail_normals(uv_vertices: np.ndarray, uv_normals: np.ndarray, displacement: np.ndarray,
                   fixed_displacement: np.ndarray, mask: np.ndarray,
                   triangles: np.ndarray | None = None) -> np.ndarray:
    """DECA's displacement2normal on UV maps (U, U, 3): move each texel's surface point along
    its coarse normal by the displacement (masked) plus DECA's fixed correction, take the
    normals of that dense grid mesh, and keep them inside `mask` (coarse normals outside)."""
    h, w = uv_vertices.shape[:2]
    mask = np.asarray(mask, np.float64)[..., None]
    offset = np.asarray(displacement, np.float64)[..., None] * mask + np.asarray(fixed_displacement)[..., None]
    moved = np.asarray(uv_vertices, np.float64) + offset * uv_normals
    tris = grid_triangles(h, w) if triangles is None else triangles
    dense = vertex_normals(moved.reshape(-1, 3), tris, eps=NORMAL_EPS).reshape(h, w, 3)
    return dense * mask + np.asarray(uv_normals, np.float64) * (1 - mask)


def detail_gain(uv_vertices: np.ndarray, uv_normals: np.ndarray, displacement: np.ndarray,
                fixed_displacement: np.ndarray, mask: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(U, U, 3) RGB factor for a photo texture: shading with D_detail's displacement over
    shading without it (both through the same dense normals, so only the predicted detail
    remains), clipped to [1 / MAX_GAIN, MAX_GAIN]; exactly 1 where the displacement is 0."""
    tris = grid_triangles(*uv_vertices.shape[:2])
    zero = np.zeros_like(displacement)
    with_detail = sh_shading(detail_normals(uv_vertices, uv_normals, displacement, fixed_displacement,
                                            mask, tris), light)
    without = sh_shading(detail_normals(uv_vertices, uv_normals, zero, fixed_displacement, mask, tris), light)
    lit = np.abs(without) > MIN_SHADING
    gain = np.divide(with_detail, without, out=np.ones_like(without), where=lit)
    return np.clip(gain, 1 / MAX_GAIN, MAX_GAIN).astype(np.float32)
