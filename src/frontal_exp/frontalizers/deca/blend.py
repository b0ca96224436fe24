"""Seamless (Poisson) pasting of a rendered face into a photo: inside a region the result keeps
the rendered image's gradients, on the region's border it meets the photo exactly, so colour
and brightness differences fade smoothly across the region instead of leaving a seam.

Solved directly (sparse LU on the region's pixels), so the result is deterministic and
pixels outside the region are the photo's, bit for bit; OpenCV's seamlessClone is neither
(it solves on the region's bounding box and varied between identical calls here)."""

from __future__ import annotations

import numpy as np


def touches_border(region: np.ndarray) -> bool:
    """Whether `region` reaches the image's outer rows or columns (no photo around it there)."""
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())


def poisson_blend(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    """`source` pasted into `target` (HxWxC, same size) over the bool HxW `region` by solving
    Laplace's equation for the correction `result - source` inside the region, with the
    value `target - source` on the 4-connected pixels around it. Returns float64 HxWxC, equal
    to `target` outside the region; None when the region is empty or touches the image
    border (the caller falls back to another composite)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    region = np.asarray(region, bool)
    if not region.any() or touches_border(region):
        return None
    src = np.asarray(source, np.float64)
    dst = np.asarray(target, np.float64)
    src = src[..., None] if src.ndim == 2 else src
    dst = dst[..., None] if dst.ndim == 2 else dst
    h, w = region.shape
    index = np.full(h * w, -1, np.int64)
    inside = np.flatnonzero(region)
    n = len(inside)
    index[inside] = np.arange(n)
    offset = (dst - src).reshape(h * w, -1)

    rows, cols = [np.arange(n)], [np.arange(n)]
    vals = [np.full(n, 4.0)]
    rhs = np.zeros((n, offset.shape[1]))
    # the border test guarantees every neighbour exists
    for step in (-w, w, -1, 1):
        nb = inside + step
        j = index[nb]
        unknown = j >= 0
        rows.append(np.flatnonzero(unknown))
        cols.append(j[unknown])
        vals.append(np.full(int(unknown.sum()), -1.0))
        rhs[~unknown] += offset[nb[~unknown]]
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    # a symmetric fill-reducing ordering: about twice as fast as the default on this matrix
    correction = splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(rhs)

    out = dst.reshape(h * w, -1).copy()
    out[inside] = src.reshape(h * w, -1)[inside] + correction
    out = out.reshape(dst.shape)
    return out if np.ndim(target) == 3 else out[..., 0]
