"""EnhancerChain: several enhancers applied in order, composed from config (no code per chain)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from frontal_exp.enhancers.base import Enhancer
from frontal_exp.errors import ConfigError


class EnhancerChain(Enhancer):
    """Applies `steps` in order; each step sees the previous output and the same `reference`.

    A chain's YAML lists nested `_target_` nodes, which Hydra instantiates recursively; a
    step still given as a config mapping (e.g. `instantiate(..., _recursive_=False)`) is
    instantiated here. Batches go through step by step, so a batching step (GFPGAN) still
    sees the whole batch.
    """

    name = "chain"

    def __init__(self, steps: list, name: str | None = None) -> None:
        if not steps:
            raise ConfigError("chain: steps must list at least one enhancer")
        built = [_as_enhancer(s) for s in steps]
        self.steps = built
        if name:
            self.name = name
        else:
            self.name = "+".join(s.name for s in built)

    def __call__(self, image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        for step in self.steps:
            image = step(image, reference)
        return image

    def enhance_batch(
        self, images: list[np.ndarray], references: list[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        for step in self.steps:
            images = step.enhance_batch(images, references)
        return images

    def __getattr__(self, item: str) -> object:
        # lets the framework log e.g. `device_used` of a GFPGAN step inside a chain
        if item.startswith("_") or item in ("steps", "name"):
            raise AttributeError(item)
        for step in self.__dict__.get("steps", []):
            if hasattr(step, item):
                return getattr(step, item)
        raise AttributeError(item)


def _as_enhancer(step: object) -> Enhancer:
    if isinstance(step, Enhancer):
        return step
    if isinstance(step, Mapping) or hasattr(step, "_target_"):
        from hydra.utils import instantiate

        built = instantiate(step)
        if isinstance(built, Enhancer):
            return built
    raise TypeError(f"chain: step {step!r} is not an Enhancer or an enhancer config")
