"""The enhancer interface: post-processing applied to a frontalized face image."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from frontal_exp.fingerprint import component_key


class Enhancer(ABC):
    """Post-processes a frontalized image (BGR uint8, HxWx3) to keep identity.

    `reference` is the angled input the frontal image was made from; enhancers that
    match colour or framing to the input use it, others ignore it.
    """

    name: str = "enhancer"
    #: attributes holding runtime state (loaded models, locks, counters), not settings:
    #: left out of `cache_key` (every other attribute is part of it)
    runtime_attrs: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Enhance one BGR uint8 image."""

    def enhance_batch(
        self, images: list[np.ndarray], references: list[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        """Enhance several images; models that batch (GFPGAN) override this."""
        refs = references if references is not None else [None] * len(images)
        return [self(img, ref) for img, ref in zip(images, refs, strict=True)]

    def cache_key(self) -> str:
        """A string that changes whenever the output for the same input could change: the
        code fingerprint, every setting (private ones too) and the model files' contents
        (see `frontal_exp.fingerprint`). Name runtime state in `runtime_attrs`."""
        return component_key(self)
