"""5-point face alignment to the 112x112 ArcFace template (the rule GT and outputs share)."""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace template for a 112x112 crop: left eye, right eye, nose tip, left/right mouth corner
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) mapping src to dst (Umeyama).

    Returns a 2x3 matrix usable by cv2.warpAffine.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1
    rot = u @ fix @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * np.diag(fix)).sum() / var_s
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def alignment_matrix(kps: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 matrix that maps an image onto the ArcFace template scaled to `size`."""
    return similarity_transform(kps, ARCFACE_TEMPLATE_112 * (size / 112.0))


def norm_crop(image: np.ndarray, kps: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned square face crop: the 5 keypoints land on the ArcFace template."""
    matrix = alignment_matrix(kps, size)
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
