"""The enhancer interface: post-processing applied to a frontalized face image."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Enhancer(ABC):
    """Post-processes a frontalized image (BGR uint8, HxWx3) to keep identity.

    `reference` is the angled input the frontal image was made from; enhancers that
    match colour or framing to the input use it, others ignore it.
    """

    name: str = "enhancer"

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
        """A string that changes whenever the output for the same input would change."""
        return f"{self.name}:{sorted((k, repr(v)) for k, v in vars(self).items() if not k.startswith('_'))!r}"
