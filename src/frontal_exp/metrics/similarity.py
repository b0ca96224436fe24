"""Cosine similarity: the one place the project compares two embeddings.

Embedders return unit-norm vectors (see `FaceEmbedder.embed_images`), but a score must not
depend on that: `cosine` normalises both sides itself, so a recognizer returning raw
features, or a cache entry written by older code, still gives a cosine in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from frontal_exp.embedders.base import l2_normalize


def cosine(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Cosine similarity of embeddings.

    Two vectors (D,) give a float. Otherwise `a` (D,) or (N, D) against `b` (D,) or (M, D)
    gives the (N, M) matrix of every row of `a` against every row of `b` (a vector counts
    as one row). A zero vector has similarity 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"embeddings of different sizes: {a.shape} and {b.shape}")
    sims = np.clip(l2_normalize(np.atleast_2d(a)) @ l2_normalize(np.atleast_2d(b)).T, -1.0, 1.0)
    if a.ndim == 1 and b.ndim == 1:
        return float(sims[0, 0])
    return sims


def fused_template(angle: np.ndarray, frontal: np.ndarray, weight: float) -> np.ndarray:
    """The fused probe `normalize(e_angle + weight * e_frontal)` (each side normalised first,
    so the weight is the frontal face's share whatever the recognizer's norms)."""
    return l2_normalize(l2_normalize(np.asarray(angle, np.float64)) + weight * l2_normalize(np.asarray(frontal, np.float64)))


def pair_cosine(emb: Mapping[str, np.ndarray | None], a: str, b: str) -> float | None:
    """Cosine of two images' embeddings, looked up by image; None where either has no face
    (or was not embedded)."""
    ea, eb = emb.get(a), emb.get(b)
    return None if ea is None or eb is None else cosine(ea, eb)
