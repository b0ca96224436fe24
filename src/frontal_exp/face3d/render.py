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


# -- per-pixel z-buffer (DECA: attributes in image space and in UV space) -------------------

#: barycentric slack so that pixel centres on a shared edge belong to a triangle
_EDGE_EPS = 1e-6
#: candidate pixels tested per chunk of triangles (bounds the memory of the vectorised test)
_CHUNK = 1 << 18


@dataclass
class ZBuffer:
    """The nearest triangle at each pixel centre of an HxW image, and where inside it.

    Pixel (row i, column j) has its centre at x = j, y = i. Unlike `rasterize` (painter's
    algorithm on whole triangles), depth is compared per pixel, so interpenetrating
    triangles split where their surfaces cross.
    """

    shape: tuple[int, int]
    #: HxW int32 triangle index, -1 where no triangle covers the pixel centre
    face: np.ndarray
    #: HxWx3 float32 barycentric coordinates in that triangle (0 where none)
    bary: np.ndarray
    #: HxW float32 interpolated depth (smaller = nearer), +inf where none
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0

    def interpolate(self, corner_values: np.ndarray) -> np.ndarray:
        """Per-triangle-corner values (T, 3) or (T, 3, K) -> HxW or HxWxK float32, 0 outside.

        Per-corner (not per-vertex) values let a triangle's corners take values from another
        index set, e.g. vertex attributes drawn at UV positions."""
        values = np.asarray(corner_values, dtype=np.float32)
        flat = values[..., None] if values.ndim == 2 else values
        out = np.zeros(self.shape + flat.shape[2:], dtype=np.float32)
        ys, xs = np.nonzero(self.mask)
        out[ys, xs] = np.einsum("nck,nc->nk", flat[self.face[ys, xs]], self.bary[ys, xs])
        return out[..., 0] if values.ndim == 2 else out


def rasterize_zbuffer(
    xy: np.ndarray,
    depth: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    cull_backfaces: bool = False,
) -> ZBuffer:
    """Rasterize a projected mesh with a per-pixel depth test (vertex `xy` in pixels, `depth`
    smaller = nearer, linear in screen space as under an orthographic camera). With
    `cull_backfaces`, triangles whose corners run clockwise on screen (y down: negative
    `signed_areas`) are kept and the others skipped, as `rasterize` does."""
    h, w = int(shape[0]), int(shape[1])
    triangles = np.asarray(triangles, dtype=np.int64)
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    z = np.asarray(depth, dtype=np.float64)
    corners = xy[triangles]  # (T, 3, 2)
    area = signed_areas(xy, triangles)
    keep = np.abs(area) > 1e-12
    if cull_backfaces:
        keep &= area < 0
    x_lo = np.clip(np.ceil(corners[:, :, 0].min(1) - _EDGE_EPS), 0, w).astype(np.int64)
    x_hi = np.clip(np.floor(corners[:, :, 0].max(1) + _EDGE_EPS), -1, w - 1).astype(np.int64)
    y_lo = np.clip(np.ceil(corners[:, :, 1].min(1) - _EDGE_EPS), 0, h).astype(np.int64)
    y_hi = np.clip(np.floor(corners[:, :, 1].max(1) + _EDGE_EPS), -1, h - 1).astype(np.int64)
    widths, heights = x_hi - x_lo + 1, y_hi - y_lo + 1
    keep &= (widths > 0) & (heights > 0)
    ids = np.nonzero(keep)[0]
    counts = (widths * heights)[ids]

    # barycentric coordinates as affine functions of (x, y): b = inv[t] @ (x, y, 1)
    (x0, y0), (x1, y1), (x2, y2) = (corners[:, k, :].T for k in range(3))
    det = np.where(keep, area, 1.0)
    inv = np.empty((len(triangles), 3, 3))
    inv[:, 0] = np.stack([y1 - y2, x2 - x1, x1 * y2 - x2 * y1], 1)
    inv[:, 1] = np.stack([y2 - y0, x0 - x2, x2 * y0 - x0 * y2], 1)
    inv[:, 2] = np.stack([y0 - y1, x1 - x0, x0 * y1 - x1 * y0], 1)
    inv /= det[:, None, None]

    zbuf = np.full(h * w, np.inf)
    face = np.full(h * w, -1, dtype=np.int64)
    bary = np.zeros((h * w, 3))
    ends = np.cumsum(counts)
    start = 0
    while start < len(ids):
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK)))
        chunk, n = ids[start:stop], counts[start:stop]
        tri = np.repeat(chunk, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        px = x_lo[tri] + local % widths[tri]
        py = y_lo[tri] + local // widths[tri]
        coeff = inv[tri]  # (N, 3, 3)
        b = coeff[:, :, 0] * px[:, None] + coeff[:, :, 1] * py[:, None] + coeff[:, :, 2]
        inside = (b >= -_EDGE_EPS).all(1)
        tri, px, py, b = tri[inside], px[inside], py[inside], b[inside]
        pz = (b * z[triangles[tri]]).sum(1)
        pix = py * w + px
        # nearest candidate per pixel in this chunk, then against what is already drawn
        order = np.lexsort((pz, pix))
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix[order][1:] != pix[order][:-1]
        best = order[first]
        nearer = pz[best] < zbuf[pix[best]]
        best = best[nearer]
        zbuf[pix[best]], face[pix[best]], bary[pix[best]] = pz[best], tri[best], b[best]
        start = stop
    return ZBuffer((h, w), face.reshape(h, w).astype(np.int32),
                   np.clip(bary, 0, 1).reshape(h, w, 3).astype(np.float32),
                   zbuf.reshape(h, w).astype(np.float32))


def ndc_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """DECA's projected coordinates (x, y in [-1, 1] across the image, y down after its
    camera's flip) -> pixel coordinates of an image `size` wide, in grid_sample's
    align_corners=False convention: -1 and 1 are the outer edges of the border pixels."""
    pts = np.asarray(points, dtype=np.float64)
    return (pts[..., :2] + 1) * size / 2 - 0.5


def uv_to_pixels(uv: np.ndarray, size: int) -> np.ndarray:
    """Texture coordinates (u, v in [0, 1], v up as in OBJ files) -> pixels of a `size` UV
    map whose first row is v = 1 (the layout DECA's texture maps use)."""
    uv = np.asarray(uv, dtype=np.float64)
    return ndc_to_pixels(np.stack([uv[:, 0] * 2 - 1, 1 - uv[:, 1] * 2], 1), size)


def rasterize_uv(uv: np.ndarray, uv_triangles: np.ndarray, size: int) -> ZBuffer:
    """The UV layout as a ZBuffer: which triangle each texel of a size x size map belongs to.
    `interpolate(vertex_values[triangles])` then draws per-vertex attributes (positions,
    normals, image coordinates) into UV space."""
    xy = uv_to_pixels(uv, size)
    return rasterize_zbuffer(xy, np.zeros(len(xy)), uv_triangles, (size, size))
