"""The study's light corrections: trim padding borders, match colour to the input, equalise sharpness."""

from __future__ import annotations

import cv2
import numpy as np

from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import ConfigError

#: images are compared for sharpness at this longest side, so resolution does not count as detail
_SHARPNESS_SIDE = 256


def padding_color(image: np.ndarray, tol: int, any_color: bool = False) -> np.ndarray | None:
    """The constant colour warping left in the corners, if at least two corners share it.

    Only black counts unless `any_color`: a plain studio background also has equal corners,
    and trimming it would re-frame a good image.
    """
    corners = np.array([image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]], np.int32)
    for c in corners:
        agree = np.abs(corners - c).max(axis=1) <= tol
        if agree.sum() >= 2:
            color = corners[agree].mean(axis=0)
            if any_color or color.max() <= tol:
                return color
    return None


def padding_mask(image: np.ndarray, color: np.ndarray, tol: int) -> np.ndarray:
    """HxW bool: pixels within `tol` of the padding colour."""
    return np.abs(image.astype(np.int32) - color).max(axis=2) <= tol


def trim_box(
    image: np.ndarray,
    tol: int = 4,
    min_fraction: float = 0.97,
    max_trim: float = 0.4,
    any_color: bool = False,
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the image without its padding rows / columns.

    A border row or column is padding when at least `min_fraction` of its pixels are within
    `tol` of the corners' common colour; at most `max_trim` of each side is removed.
    """
    h, w = image.shape[:2]
    color = padding_color(image, tol, any_color)
    if color is None:
        return 0, h, 0, w
    is_pad = padding_mask(image, color, tol)
    rows = is_pad.mean(axis=1) >= min_fraction
    cols = is_pad.mean(axis=0) >= min_fraction

    def run(flags: np.ndarray, limit: int) -> int:
        # length of the leading run of padding lines, capped
        n = int(np.argmin(flags)) if not flags.all() else len(flags)
        return min(n, limit)

    top, bottom = run(rows, int(h * max_trim)), run(rows[::-1], int(h * max_trim))
    left, right = run(cols, int(w * max_trim)), run(cols[::-1], int(w * max_trim))
    return top, h - bottom, left, w - right


def match_color(
    image: np.ndarray,
    reference: np.ndarray,
    strength: float = 1.0,
    max_ratio: float = 2.0,
    content: np.ndarray | None = None,
) -> np.ndarray:
    """Shift / scale each Lab channel so its mean and std match the reference's.

    `strength` blends toward the matched image; the std ratio is clipped to
    [1/max_ratio, max_ratio] so a flat frontalized region is not blown up into noise.
    `content` (HxW bool) limits the statistics and the change to those pixels, so padding
    left by warping neither skews the statistics nor gets tinted.
    """
    # float Lab: the 8-bit Lab round trip alone moves pixels by up to 5 levels
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB).reshape(-1, 3)
    pixels = lab[content] if content is not None and content.any() else lab.reshape(-1, 3)
    mu, sd = pixels.mean(0), pixels.std(0)
    ratio = np.clip(ref.std(0) / np.maximum(sd, 1e-3), 1.0 / max_ratio, max_ratio)
    matched = (lab - mu) * ratio + ref.mean(0)
    out = lab + strength * (matched - lab)
    bgr = cv2.cvtColor(out, cv2.COLOR_LAB2BGR)
    result = np.clip(bgr * 255.0, 0, 255).round().astype(np.uint8)
    if content is not None:
        result[~content] = image[~content]
    return result


def sharpness(image: np.ndarray) -> float:
    """Std of the Laplacian of the grey image at a fixed size (a resolution-free detail measure)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = _SHARPNESS_SIDE / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).std())


def equalize_sharpness(
    image: np.ndarray, reference: np.ndarray, max_amount: float = 0.5, sigma: float = 1.0
) -> np.ndarray:
    """Unsharp-mask the image toward the reference's sharpness, never more than `max_amount`.

    Only sharpens: frontalization blurs (resampling, inpainting), it does not add detail, and
    blurring a sharper output would throw identity detail away.
    """
    have, want = sharpness(image), sharpness(reference)
    if have <= 1e-6 or want <= have:
        return image
    amount = float(min(max_amount, want / have - 1.0))
    img = image.astype(np.float32)
    detail = img - cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img + amount * detail, 0, 255).round().astype(np.uint8)


class LightCorrections(Enhancer):
    """Trim padding borders, then match Lab colour statistics and sharpness to the input.

    Padding is a border of near-constant rows / columns in the corners' colour: black by
    default (what warping leaves), any constant colour with `trim_any_color`.
    Each step is switchable. Colour and sharpness need the `reference` (the angled input);
    without one they are skipped. Trimming changes the image size (the embedder re-detects
    and aligns, so that is safe).
    """

    name = "corrections"

    def __init__(
        self,
        trim: bool = True,
        color: bool = True,
        sharpen: bool = True,
        trim_tol: int = 4,
        trim_min_fraction: float = 0.97,
        trim_any_color: bool = False,
        color_strength: float = 1.0,
        max_sharpen: float = 0.5,
    ) -> None:
        if not 0.0 <= color_strength <= 1.0:
            raise ConfigError("corrections: color_strength must be in [0, 1]")
        if max_sharpen < 0:
            raise ConfigError("corrections: max_sharpen must be >= 0")
        self.trim = trim
        self.color = color
        self.sharpen = sharpen
        self.trim_tol = trim_tol
        self.trim_min_fraction = trim_min_fraction
        self.trim_any_color = trim_any_color
        self.color_strength = color_strength
        self.max_sharpen = max_sharpen

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        out = image
        if self.trim:
            top, bottom, left, right = trim_box(out, self.trim_tol, self.trim_min_fraction,
                                                any_color=self.trim_any_color)
            out = np.ascontiguousarray(out[top:bottom, left:right])
        if reference is not None and self.color and self.color_strength > 0:
            pad = padding_color(out, self.trim_tol, self.trim_any_color)
            content = None if pad is None else ~padding_mask(out, pad, self.trim_tol)
            out = match_color(out, reference, self.color_strength, content=content)
        if reference is not None and self.sharpen and self.max_sharpen > 0:
            out = equalize_sharpness(out, reference, self.max_sharpen)
        return out
