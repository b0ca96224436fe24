"""The identity frontalizer: returns its input. The baseline whose Net Gain is exactly 0."""

from __future__ import annotations

import numpy as np

from frontal_exp.frontalizers.base import Frontalizer


class IdentityFrontalizer(Frontalizer):
    name = "identity"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image
