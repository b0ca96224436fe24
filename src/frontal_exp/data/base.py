"""What a dataset yields: items pairing an angled photo of a person with their frontal GT."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from frontal_exp.errors import DatasetError


@dataclass(frozen=True)
class Item:
    """One evaluation item: an angled image and the GT (frontal) image of the same person.

    Pose angles are in degrees (see `frontal_exp.face3d.pose.HeadPose` for the convention);
    None when the dataset has no pose for the image.
    """

    item_id: str
    identity: str
    angle_path: Path
    gt_path: Path
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None


@dataclass(frozen=True)
class Skip:
    """Something a loader passed over, and why (counted and reported, never dropped silently)."""

    what: str
    reason: str


@dataclass
class LoadedDataset:
    name: str
    items: list[Item]
    skipped: list[Skip] = field(default_factory=list)
    #: extra frontal images per identity (for GT-vs-GT protocols), may be empty
    extra_frontals: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def identities(self) -> list[str]:
        return sorted({it.identity for it in self.items})


class Dataset(ABC):
    """A source of `Item`s. `limit` keeps a seeded random subset of the items."""

    name: str = "dataset"
    #: the environment variable the option's config reads its root from, if any
    root_env: str | None = None

    def __init__(self, limit: int | None = None, seed: int = 0) -> None:
        self.limit = limit
        self.seed = seed

    @abstractmethod
    def _load(self) -> LoadedDataset:
        """All items of the dataset, in a stable order."""

    def load(self) -> LoadedDataset:
        data = self._load()
        if not data.items:
            raise DatasetError(f"dataset {self.name!r} has no usable items "
                               f"({len(data.skipped)} skipped: {_reasons(data.skipped)})")
        if self.limit is not None and self.limit < len(data.items):
            rng = random.Random(self.seed)
            keep = sorted(rng.sample(range(len(data.items)), self.limit))
            data.items = [data.items[i] for i in keep]
        return data


def _reasons(skips: list[Skip]) -> str:
    counts: dict[str, int] = {}
    for s in skips:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def require_dir(root: str | Path | None, layout: str, env: str | None = None) -> Path:
    """The dataset root as a Path, or a DatasetError naming the path (or the setting and
    environment variable that give it) and the expected layout."""
    if root is None or str(root) in ("", "???"):
        how = f"set {env}=/path/to/data or dataset.root=/path/to/data" if env else "set dataset.root=/path/to/data"
        raise DatasetError(f"no dataset root given; {how}. Expected layout:\n{layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} does not exist. Expected layout:\n{layout}")
    if not any(path.iterdir()):
        raise DatasetError(f"dataset root {path} is empty. Expected layout:\n{layout}")
    return path
