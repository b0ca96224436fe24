"""Background removal with MediaPipe selfie segmentation (the study's "Omit-bg")."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from frontal_exp.enhancers.base import Enhancer


class OmitBackground(Enhancer):
    """Replaces everything but the person with a flat colour.

    The mask is soft (MediaPipe's confidence), so hair and shoulders fade rather than cut.
    `model_selection` 0 is the general model (256x256), 1 the landscape one (144x256).
    """

    name = "omit_bg"

    def __init__(
        self,
        color: tuple[int, int, int] | list[int] = (255, 255, 255),
        threshold: float = 0.5,
        softness: float = 0.1,
        model_selection: int = 0,
    ) -> None:
        self.color = tuple(int(c) for c in color)
        if len(self.color) != 3:
            raise ValueError("omit_bg: color must be three BGR values")
        self.threshold = threshold
        self.softness = softness
        self.model_selection = model_selection
        self._seg = None
        self._lock = threading.Lock()

    def person_mask(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability in [0, 1], HxW float32."""
        import mediapipe as mp

        with self._lock:
            if self._seg is None:
                self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(
                    model_selection=self.model_selection
                )
            result = self._seg.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        prob = result.segmentation_mask
        if prob is None:
            return np.ones(image.shape[:2], np.float32)
        lo, hi = self.threshold - self.softness, self.threshold + self.softness
        return np.clip((prob - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        alpha = self.person_mask(image)[..., None]
        background = np.empty_like(image)
        background[:] = self.color
        return (alpha * image + (1 - alpha) * background).round().astype(np.uint8)
