"""Cheap image enhancers: none (pass-through) and unsharp-mask sharpening."""

from __future__ import annotations

import cv2
import numpy as np

from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import ConfigError


class NoEnhancer(Enhancer):
    """Returns the frontalized image unchanged (the study's "Base" row)."""

    name = "none"

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        return image


class Sharpen(Enhancer):
    """Unsharp mask: image + amount * (image - gaussian_blur(image, sigma)).

    `threshold` leaves low-contrast detail (noise, skin texture) alone: only pixels whose
    difference from the blur exceeds it are sharpened.
    """

    name = "sharp"

    def __init__(self, amount: float = 1.0, sigma: float = 1.5, threshold: int = 0) -> None:
        if amount < 0 or sigma <= 0:
            raise ConfigError(f"sharp: amount must be >= 0 and sigma > 0, got amount={amount}, sigma={sigma}")
        self.amount = amount
        self.sigma = sigma
        self.threshold = threshold

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        img = image.astype(np.float32)
        blurred = cv2.GaussianBlur(img, (0, 0), self.sigma)
        detail = img - blurred
        if self.threshold > 0:
            detail[np.abs(detail) < self.threshold] = 0
        return np.clip(img + self.amount * detail, 0, 255).round().astype(np.uint8)
