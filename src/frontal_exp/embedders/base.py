"""Interfaces of the face pipeline: a detector finds faces, a recognizer embeds aligned crops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from frontal_exp.fingerprint import component_key


@dataclass
class Face:
    """One detected face in image pixel coordinates."""

    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    kps: np.ndarray  # (5, 2) eyes, nose, mouth corners
    det_score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.bbox[2] - self.bbox[0]) * max(0.0, self.bbox[3] - self.bbox[1]))


class Detector(ABC):
    """Finds faces with 5 keypoints."""

    name: str = "detector"
    #: attributes holding runtime state (a loaded model, a session), not settings: left out of
    #: `cache_key` (every other attribute is part of it; model file Paths by their content)
    runtime_attrs: tuple[str, ...] = ()

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in a BGR uint8 image, best first."""

    def cache_key(self) -> str:
        """Changes whenever the output for the same input could change: code, every setting
        and the model file's content (see `frontal_exp.fingerprint`)."""
        return component_key(self)


class Recognizer(ABC):
    """Embeds aligned 112x112 face crops."""

    name: str = "recognizer"
    #: attributes holding runtime state (a loaded model, a session), not settings: left out of
    #: `cache_key` (every other attribute is part of it; model file Paths by their content)
    runtime_attrs: tuple[str, ...] = ()
    input_size: int = 112

    @abstractmethod
    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """(N, D) L2-normalised embeddings of N aligned BGR crops."""

    def cache_key(self) -> str:
        """Changes whenever the output for the same input could change: code, every setting
        and the model file's content (see `frontal_exp.fingerprint`)."""
        return component_key(self)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
