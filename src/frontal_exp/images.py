"""Reading images robustly: every frontal_exp image is BGR uint8, HxWx3."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.errors import BadImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def to_bgr_uint8(image: np.ndarray, source: str = "array") -> np.ndarray:
    """Convert grayscale / RGBA / 16-bit / float images to BGR uint8."""
    if image is None or image.size == 0:
        raise BadImageError(f"{source}: empty image")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        scale = 255.0 if image.max() <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadImageError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise BadImageError(f"{source}: unsupported image shape {image.shape}")
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as BGR uint8; raise `BadImageError` with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise BadImageError(f"{path}: empty file")
    # IMREAD_COLOR applies the EXIF orientation (phone photos); ANYDEPTH keeps 16-bit data
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":  # libpng writes warnings (iCCP profiles) to fd 2
        from frontal_exp.quiet import native_stderr_filtered

        with native_stderr_filtered():
            image = cv2.imdecode(data, flags)
    else:
        image = cv2.imdecode(data, flags)
    if image is None:
        raise BadImageError(f"{path}: not a decodable image (truncated or not an image file)")
    return to_bgr_uint8(image, str(path))


def downscale_to(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longest side is at most `max_side`; return the image and the scale used."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a BGR uint8 image, creating parent folders (unicode-safe)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise BadImageError(f"{path}: cannot encode image")
    buf.tofile(path)
