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


class CroppingFrontalizer(Frontalizer):
    """A frontalizer that cuts a face crop out of each photo, then runs its networks on
    `batch_size` crops at a time (LivePortrait, FFWM, DECA).

    Subclasses give `crop(image)` (raises for that image alone, e.g. no face found) and
    `frontalize_chunk(images, crops)` (one output or exception per crop; an exception it
    raises fails every item of the chunk, except a `ModelFileError`, which stops the run).
    """

    batch_size: int = 8

    @abstractmethod
    def crop(self, image: np.ndarray) -> object:
        """The face crop of one photo (whatever `frontalize_chunk` takes)."""

    @abstractmethod
    def frontalize_chunk(self, images: list[np.ndarray], crops: list) -> list[np.ndarray | Exception]:
        """Frontal outputs of up to `batch_size` crops of `images`, in order."""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        result = self.frontalize_batch([image])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def frontalize_batch(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        """Crop every image, run the networks `batch_size` faces at a time; failures in place."""
        out: list[np.ndarray | Exception | None] = [None] * len(images)
        ready: list[tuple[int, object]] = []
        for i, image in enumerate(images):
            try:
                ready.append((i, self.crop(image)))
            except ModelFileError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded per item by the caller
                out[i] = exc
        for start in range(0, len(ready), max(1, self.batch_size)):
            chunk = ready[start:start + max(1, self.batch_size)]
            try:
                results = self.frontalize_chunk([images[i] for i, _ in chunk], [c for _, c in chunk])
            except ModelFileError:
                raise  # the model files: every chunk would fail the same way
            except Exception as exc:  # noqa: BLE001 - the chunk's items fail, the run goes on
                results = [exc] * len(chunk)
            for (i, _), result in zip(chunk, results, strict=True):
                out[i] = result
        return out  # type: ignore[return-value]
