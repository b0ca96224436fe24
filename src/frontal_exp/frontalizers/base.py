"""The frontalizer interface: an angled face image in, a frontal view of it out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from frontal_exp.errors import ModelFileError
from frontal_exp.fingerprint import component_key


class Frontalizer(ABC):
    """Turns a face photo (BGR uint8, HxWx3) into the same person seen from the front.

    Implementations return an image of the same size and framing as the input so it can
    be compared with the GT photo. They raise `FrontalizationError` when an image cannot
    be processed (the evaluation records the item as skipped with that reason).
    """

    #: short name used in run names, cache keys and tables
    name: str = "frontalizer"
    #: attributes holding runtime state (loaded models, locks, counters), not settings:
    #: left out of `cache_key` (every other attribute is part of it)
    runtime_attrs: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Frontalize one BGR uint8 image."""

    def frontalize_batch(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Frontalize several images; a failure is returned in place, never raised, except a
        missing or unusable model file (`ModelFileError`), which stops the run.

        Models that batch on a GPU override this; the default loops.
        """
        out: list[np.ndarray | Exception] = []
        for image in images:
            try:
                out.append(self(image))
            except ModelFileError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded per item by the caller
                out.append(exc)
        return out

    def cache_key(self) -> str:
        """A string that changes whenever the output for the same input could change: the
        code fingerprint, every setting (private ones too) and the model files' contents
        (see `frontal_exp.fingerprint`). Name runtime state in `runtime_attrs`."""
        return component_key(self)
