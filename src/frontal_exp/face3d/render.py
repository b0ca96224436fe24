"""Fast piecewise-affine mesh re-rendering: rasterize the target mesh once, then one cv2.remap.

The target mesh is rasterized into a triangle-index map (painter's algorithm: triangles
drawn far to near, so nearer ones win, which is a z-buffer at triangle granularity) and
per-pixel barycentric coordinates. Anything defined per vertex (source positions,
visibility weights) is then interpolated per pixel with those coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4  # sub-pixel bits for cv2.fillConvexPoly


@dataclass
class Raster:
    """Which triangle covers each pixel of an HxW image, and where inside it."""

    shape: tuple[int, int]
    #: HxW int32 triangle index, -1 where no triangle is drawn
    tri_map: np.ndarray
    #: row and column of every covered pixel, and the triangle covering it
    ys: np.ndarray
    xs: np.ndarray
    tri_ids: np.ndarray
    #: (T, 3, 3) per triangle: barycentric coordinates = inv_corners[t] @ (x, y, 1)
    inv_corners: np.ndarray
    #: the (T, 3) triangles that were rasterized
    triangles: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """HxW bool: pixels covered by the mesh."""
        return self.tri_map >= 0

    def interpolate(self, values: np.ndarray) -> np.ndarray:
        """Per-vertex values (V,) or (V, K) -> per covered pixel (N,) or (N, K).

        Folds the corner values into one affine function per triangle first, so the
        per-pixel work is a gather and two multiply-adds.
        """
        values = np.asarray(values, dtype=np.float32)
        flat = values[:, None] if values.ndim == 1 else values
        corners = flat[self.triangles]  # (T, 3, K)
        coeff = np.einsum("tck,tcj->tkj", corners, self.inv_corners)  # (T, K, 3)
        c = coeff[self.tri_ids]  # (N, K, 3)
        x = self.xs.astype(np.float32)[:, None]
        y = self.ys.astype(np.float32)[:, None]
        out = c[:, :, 0] * x + c[:, :, 1] * y + c[:, :, 2]
        return out[:, 0] if values.ndim == 1 else out

    def to_image(self, per_pixel: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter per covered pixel values (N,) or (N, K) into an HxW(xK) float32 image."""
        per_pixel = np.asarray(per_pixel, dtype=np.float32)
        out = np.full(self.shape + per_pixel.shape[1:], fill, dtype=np.float32)
        out[self.ys, self.xs] = per_pixel
        return out


def signed_areas(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Twice the signed 2D area of each triangle (negative = facing the camera, see facemesh)."""
    a, b, c = (xy[triangles[:, k], :2].astype(np.float64) for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def rasterize(
    xy: np.ndarray,
    depth: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    cull_backfaces: bool = True,
    draw: np.ndarray | None = None,
) -> Raster:
    """Rasterize a 2D-projected mesh (vertex positions `xy` in pixels, `depth` larger = farther).

    Triangles whose projection is degenerate, back-facing (when `cull_backfaces`; front
    faces have negative `signed_areas`), or not selected by the bool mask `draw` are skipped.
    """
    h, w = int(shape[0]), int(shape[1])
    triangles = np.asarray(triangles, dtype=np.int64)
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    area = signed_areas(xy, triangles)
    keep = np.abs(area) > 1e-6
    if cull_backfaces:
        keep &= area < 0
    if draw is not None:
        keep &= np.asarray(draw, dtype=bool)
    # off-screen triangles cost nothing to skip
    corners = xy[triangles]
    keep &= (corners[:, :, 0].max(1) >= 0) & (corners[:, :, 0].min(1) < w)
    keep &= (corners[:, :, 1].max(1) >= 0) & (corners[:, :, 1].min(1) < h)
    ids = np.nonzero(keep)[0]
    tri_depth = np.asarray(depth, dtype=np.float64)[triangles[ids]].mean(1)
    ids = ids[np.argsort(-tri_depth, kind="stable")]  # far first: nearer triangles overwrite

    tri_map = np.full((h, w), -1, dtype=np.int32)
    pts = np.round(xy[triangles] * (1 << _SHIFT)).astype(np.int32)
    for i in ids.tolist():
        cv2.fillConvexPoly(tri_map, pts[i], int(i), lineType=cv2.LINE_8, shift=_SHIFT)

    ys, xs = np.nonzero(tri_map >= 0)
    tri_ids = tri_map[ys, xs]
    # barycentrics: solve [x, y, 1] = M_t @ bary with M_t's columns the corners (x, y, 1);
    # the inverse in closed form (adjugate / determinant) is much faster than linalg.inv
    (x0, y0), (x1, y1), (x2, y2) = (corners[:, k, :].T for k in range(3))
    det = np.where(keep, area, 1.0)
    minv = np.empty((len(triangles), 3, 3))
    minv[:, 0] = np.stack([y1 - y2, x2 - x1, x1 * y2 - x2 * y1], 1)
    minv[:, 1] = np.stack([y2 - y0, x0 - x2, x2 * y0 - x0 * y2], 1)
    minv[:, 2] = np.stack([y0 - y1, x1 - x0, x0 * y1 - x1 * y0], 1)
    minv = (minv / det[:, None, None]).astype(np.float32)
    return Raster((h, w), tri_map, ys, xs, tri_ids, minv, triangles)


def source_maps(raster: Raster, src_xy: np.ndarray, fill: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that send each covered target pixel to its place in the source mesh."""
    pos = raster.interpolate(np.asarray(src_xy, dtype=np.float32)[:, :2])
    return raster.to_image(pos[:, 0], fill), raster.to_image(pos[:, 1], fill)


def render_mesh(
    src_image: np.ndarray,
    src_xy: np.ndarray,
    dst_xy: np.ndarray,
    triangles: np.ndarray,
    out_shape: tuple[int, int],
    dst_depth: np.ndarray | None = None,
    draw: np.ndarray | None = None,
    background: np.ndarray | None = None,
    cull_backfaces: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `src_image` so that mesh vertices at `src_xy` land on `dst_xy`.

    Each target triangle takes the pixels of the same triangle in the source (an affine
    map per triangle, bilinear sampling). Where triangles overlap, the one with the smaller
    `dst_depth` (nearer) wins. `draw` (T,) bool limits the triangles drawn (e.g. those
    visible in the source). Pixels outside the mesh come from `background` (zeros if None).
    Returns the image and the HxW bool mask of pixels the mesh covered.
    """
    dst_xy = np.asarray(dst_xy, dtype=np.float64)
    depth = np.zeros(len(dst_xy)) if dst_depth is None else dst_depth
    raster = rasterize(dst_xy, depth, triangles, out_shape, cull_backfaces=cull_backfaces, draw=draw)
    map_x, map_y = source_maps(raster, src_xy)
    out = cv2.remap(src_image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = raster.mask
    if background is None:
        out[~mask] = 0
    else:
        out[~mask] = background[~mask]
    return out, mask
