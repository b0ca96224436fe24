"""FaceEmbedder: detect -> pick one face -> align to the ArcFace template -> embed (batched)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from frontal_exp.embedders.align import norm_crop
from frontal_exp.embedders.base import Detector, Face, Recognizer, l2_normalize
from frontal_exp.errors import ConfigError
from frontal_exp.fingerprint import component_key
from frontal_exp.images import downscale_to


@dataclass
class FaceEmbedding:
    """The face an embedder chose in an image, and its embedding (None: no face found)."""

    embedding: np.ndarray | None
    face: Face | None = None
    #: "", or why there is no embedding (e.g. "no_face")
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.embedding is not None


def detect_with_padding(detector: Detector, image: np.ndarray, pad: float = 0.5) -> list[Face]:
    """Faces in `image` coordinates; when none is found, search again on a copy padded with
    black by `pad` of the image size on every side.

    Detectors are trained on faces with context around them and miss tight, pre-aligned
    crops (a face filling the image); the border gives them that context back.
    """
    faces = detector.detect(image)
    if faces or pad <= 0:
        return faces
    off = int(round(pad * max(image.shape[:2])))
    padded = cv2.copyMakeBorder(image, off, off, off, off, cv2.BORDER_CONSTANT, value=0)
    return [Face(bbox=f.bbox - off, kps=f.kps - off, det_score=f.det_score) for f in detector.detect(padded)]


class FaceEmbedder:
    """A detector + recognizer pair, as the study's "Retina+R100", "SCRFD+R50", ...

    Huge images are downscaled before detection (`max_side`). When nothing is found, the
    image is padded by `pad` of its size on every side and searched again: tight,
    pre-aligned crops (a face filling the image) are otherwise missed because detectors
    were trained on faces with context around them.

    `flip`: flip test-time augmentation. The embedding is the normalised mean of the aligned
    crop's and its mirror's embeddings; the 112x112 aligned crop is mirrored (as
    face-recognition papers do), so it costs one detection and a recognition batch twice
    as large.
    """

    def __init__(
        self,
        detector: Detector,
        recognizer: Recognizer,
        name: str = "embedder",
        select: str = "largest",
        pad: float = 0.5,
        max_side: int = 1280,
        flip: bool = False,
    ) -> None:
        if select not in ("largest", "central", "score"):
            raise ConfigError(f"select must be largest, central or score, not {select!r}")
        self.detector = detector
        self.recognizer = recognizer
        self.name = name
        self.select = select
        self.pad = pad
        self.max_side = max_side
        self.flip = flip

    def cache_key(self) -> str:
        """Key of the embedding cache: this code, every setting, and the detector's and
        recognizer's own keys (their code and model files' contents)."""
        return component_key(self)

    def _pick(self, faces: list[Face], shape: tuple[int, ...]) -> Face:
        if self.select == "score":
            return max(faces, key=lambda f: f.det_score)
        if self.select == "central":
            centre = np.array([shape[1] / 2, shape[0] / 2])
            return min(faces, key=lambda f: np.linalg.norm(f.kps.mean(0) - centre))
        return max(faces, key=lambda f: f.area)

    def find_face(self, image: np.ndarray) -> Face | None:
        """The chosen face in original image coordinates, or None."""
        small, scale = downscale_to(image, self.max_side)
        faces = detect_with_padding(self.detector, small, self.pad)
        if not faces:
            return None
        face = self._pick(faces, small.shape)
        return Face(bbox=face.bbox / scale, kps=face.kps / scale, det_score=face.det_score)

    def align(self, image: np.ndarray, face: Face) -> np.ndarray:
        return norm_crop(image, face.kps, self.recognizer.input_size)

    def embed_images(self, images: list[np.ndarray]) -> list[FaceEmbedding]:
        """Embed the chosen face of each image; recognition runs as one batch.

        Embeddings are unit-norm whatever the recognizer returns, so a dot product of two
        is their cosine similarity (compare them with `metrics.similarity.cosine`)."""
        faces = [self.find_face(img) for img in images]
        todo = [i for i, f in enumerate(faces) if f is not None]
        crops = [self.align(images[i], faces[i]) for i in todo]
        feats = self._embed_crops(crops) if crops else np.zeros((0, 0), np.float32)
        out = [FaceEmbedding(None, None, "no_face") for _ in images]
        for row, i in enumerate(todo):
            out[i] = FaceEmbedding(feats[row], faces[i])
        return out

    def _embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, D) unit-norm embeddings of aligned crops (with `flip`, of each crop and its mirror)."""
        if not self.flip:
            return l2_normalize(np.asarray(self.recognizer.embed(crops), dtype=np.float32))
        both = l2_normalize(np.asarray(self.recognizer.embed(crops + [cv2.flip(c, 1) for c in crops]),
                                       dtype=np.float32))
        n = len(crops)
        return l2_normalize(both[:n] + both[n:])

    def embed(self, image: np.ndarray) -> FaceEmbedding:
        return self.embed_images([image])[0]
