"""`model=gated`: any frontalizer, used only where a rule learned on other identities says it helps.

The wrapper frontalizes every image with its `inner` frontalizer (so its images and their
cache entries are exactly the inner model's); the gate is applied when the run is evaluated
(`frontal_exp.protocols.gating`): per fold by identity, a rule learned on the other folds'
items decides, for each held-out item, whether its result is the inner model's output (or
the fused probe, `mode: fuse`) or the angled face itself.

Only the frontalization protocol applies the gate; elsewhere (`python -m frontal_exp.infer`,
`protocol=verification`) there is no calibration step, and the wrapper is its inner
frontalizer on every image.
"""

from __future__ import annotations

import numpy as np

from frontal_exp.errors import ConfigError
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.protocols.gating import GateSpec


class GatedFrontalizer(Frontalizer):
    """`inner` frontalizes; `mode` (frontal | fuse) says which gain the gate maximises;
    `features` the per-item values a rule may threshold (abs_yaw, abs_pitch, abs_roll, yaw,
    pitch, angle_det_score); `folds` the number of folds by identity; `min_gain` the mean
    calibration gain a rule must exceed to be used instead of "never", by more than `min_z`
    standard errors; `validate` also requires the rule-learning procedure to gain on held-out
    identities WITHIN the calibration items (a nested cross-validation); `seed` the fold draw."""

    def __init__(
        self,
        inner: Frontalizer,
        mode: str = "frontal",
        features: list[str] | None = None,
        folds: int = 5,
        min_gain: float = 0.0,
        min_z: float = 1.0,
        validate: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(inner, Frontalizer):
            raise ConfigError(f"model.inner must be a frontalizer (a model option), got {type(inner).__name__}")
        if isinstance(inner, GatedFrontalizer):
            raise ConfigError("model.inner is itself gated; gate a plain frontalizer")
        self.inner = inner
        self.gate = GateSpec(mode=mode, features=tuple(features or ("abs_yaw",)), folds=int(folds),
                             min_gain=float(min_gain), min_z=float(min_z),
                             validate=bool(validate), seed=int(seed))
        self.name = f"gated-{inner.name}" if self.gate.mode == "frontal" else f"gated-{self.gate.mode}-{inner.name}"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.inner(image)

    def frontalize_batch(self, images: list[np.ndarray]) -> list[np.ndarray | Exception]:
        return self.inner.frontalize_batch(images)

    def cache_key(self) -> str:
        # the images are the inner model's: share its cache entries (the gate changes no pixel)
        return self.inner.cache_key()

    # runtime facts the pipeline and run params read from a frontalizer: the inner model's
    @property
    def device_used(self) -> str | None:
        for attr in ("device_used", "device"):
            value = getattr(self.inner, attr, None)
            if value is not None and not callable(value):
                return str(value)
        return None

    @property
    def no_face_count(self) -> int | None:
        count = getattr(self.inner, "no_face_count", None)
        return count if isinstance(count, int) else None
