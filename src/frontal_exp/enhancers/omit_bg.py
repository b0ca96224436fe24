"""Background removal with MediaPipe selfie segmentation (the study's "Omit-bg")."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import ConfigError


class OmitBackground(Enhancer):
    """Replaces everything but the person with a flat colour.

    The mask is soft (MediaPipe's confidence), so hair and shoulders fade rather than cut.
    `model_selection` 0 is the general model (256x256), 1 the landscape one (144x256).
    """

    name = "omit_bg"
    runtime_attrs = ("_seg", "_lock")

    def __init__(
        self,
        color: tuple[int, int, int] | list[int] = (255, 255, 255),
        threshold: float = 0.5,
        softness: float = 0.1,
        model_selection: int = 0,
    ) -> None:
        self.color = tuple(int(c) for c in color)
        if len(self.color) != 3:
            raise ConfigError("omit_bg: color must be three BGR values")
        self.threshold = threshold
        self.softness = softness
        self.model_selection = model_selection
        self._seg = None
        self._lock = threading.Lock()

    def person_mask(self, image: np.ndarray) -> np.ndarray:
        """Foreground probability in [0, 1], HxW float32."""
        import mediapipe as mp

        from frontal_exp.quiet import native_stderr_filtered

        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        with self._lock:
            if self._seg is None:  # graph creation and first inference print native chatter
                with native_stderr_filtered():
                    self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(
                        model_selection=self.model_selection
                    )
                    result = self._seg.process(rgb)
            else:
                result = self._seg.process(rgb)
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


class OmitBackgroundCrop(OmitBackground):
    """Omit-bg, then crop tightly around the face (the study's cropped Omit-bg variant).

    `crop_to` "face": the box of MediaPipe FaceMesh's landmarks (the face mask proper);
    "person": the box of the segmentation mask. `margin` grows the box by that fraction of
    its size on every side. When no face mesh is found the person box is used, and when the
    mask is empty too the image is only background-replaced, not cropped.
    """

    name = "omit_bg_crop"

    def __init__(
        self,
        color: tuple[int, int, int] | list[int] = (255, 255, 255),
        threshold: float = 0.5,
        softness: float = 0.1,
        model_selection: int = 0,
        crop_to: str = "face",
        margin: float = 0.1,
    ) -> None:
        super().__init__(color, threshold, softness, model_selection)
        if crop_to not in ("face", "person"):
            raise ConfigError("omit_bg_crop: crop_to must be face or person")
        if margin < 0:
            raise ConfigError("omit_bg_crop: margin must be >= 0")
        self.crop_to = crop_to
        self.margin = margin

    def face_box(self, image: np.ndarray) -> tuple[float, float, float, float] | None:
        """(x1, y1, x2, y2) of the face mesh landmarks, or None when no face mesh is found."""
        from frontal_exp.face3d.facemesh import get_face_mesh

        pts = get_face_mesh().detect(image)  # the process-wide MediaPipe graph
        if pts is None:
            return None
        return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        alpha = self.person_mask(image)
        background = np.empty_like(image)
        background[:] = self.color
        out = (alpha[..., None] * image + (1 - alpha[..., None]) * background).round().astype(np.uint8)
        box = self.face_box(image) if self.crop_to == "face" else None
        if box is None:
            ys, xs = np.nonzero(alpha > 0.5)
            if len(xs) == 0:
                return out
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        x1, y1, x2, y2 = box
        mx, my = self.margin * (x2 - x1), self.margin * (y2 - y1)
        h, w = image.shape[:2]
        x1, y1 = max(0, int(np.floor(x1 - mx))), max(0, int(np.floor(y1 - my)))
        x2, y2 = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return out
        return np.ascontiguousarray(out[y1:y2, x1:x2])
