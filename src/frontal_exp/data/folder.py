"""Folder-per-identity datasets: `root/<identity>/*.jpg`, and LFW, which has that layout."""

from __future__ import annotations

import csv
import errno
import fnmatch
import math
import random
import stat
from dataclasses import dataclass
from pathlib import Path

from frontal_exp.data.base import Dataset, Item, LoadedDataset, Skip, require_dir
from frontal_exp.errors import ConfigError, DatasetError
from frontal_exp.images import IMAGE_SUFFIXES

FOLDER_LAYOUT = """  ROOT/<identity>/<any name>.jpg|png   (two or more photos per identity;
  the GT photo is chosen by gt=pattern (gt_pattern, e.g. '*frontal*'), gt=first, gt=pose,
  or gt=manifest: a CSV (dataset.manifest, default ROOT/manifest.csv) with columns
  identity, file (path under ROOT), role (gt | angled) or is_gt (1 | 0), and optionally
  yaw, pitch, roll in degrees (the item's pose when given)"""

LFW_LAYOUT = """  ROOT/<Name>/<Name>_0001.jpg   (e.g. lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg)"""


def not_a_file(path: Path) -> str | None:
    """Why a folder entry is not a regular file that can be read (None when it is one)."""
    try:
        mode = path.stat().st_mode  # follows symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "dangling symlink"
        return f"cannot stat ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "special file (socket or device)"


class FolderDataset(Dataset):
    """One folder per identity; one photo is the GT, the others are the angled inputs.

    `gt`: `pattern` (the first file matching `gt_pattern`), `first` (first file by name),
    `pose` (the most frontal by estimated head pose), or `manifest` (the rows of the CSV
    `manifest`, see `FOLDER_LAYOUT`; its yaw/pitch/roll are the items' poses, estimated
    only where a row has none and `estimate_pose` is on). Identities with no GT, or with
    no other photo, are skipped and counted.
    """

    name = "folder"
    layout = FOLDER_LAYOUT

    def __init__(
        self,
        root: str | None = None,
        gt: str = "pose",
        gt_pattern: str = "*frontal*",
        manifest: str | None = None,
        min_images: int = 2,
        estimate_pose: bool = False,
        cache_dir: str | None = None,
        limit: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(limit=limit, seed=seed)
        if gt not in ("pattern", "first", "pose", "manifest"):
            raise ConfigError(f"dataset.gt must be one of pattern, first, pose, manifest; got {gt!r}")
        self.root = root
        self.gt = gt
        self.gt_pattern = gt_pattern
        self.manifest = manifest
        self.min_images = min_images
        self.estimate_pose = estimate_pose
        self.cache_dir = cache_dir

    def _identities(self, root: Path, skipped: list[Skip]) -> dict[str, list[Path]]:
        """The photos of each identity folder. Entries named like an image that are not a
        readable file (a dangling symlink, a symlink loop, a folder, a FIFO) are recorded in
        `skipped` as `<identity>/<name>` with the reason."""
        out = {}
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            files = []
            for path in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                problem = not_a_file(path)
                if problem:
                    skipped.append(Skip(f"{d.name}/{path.name}", f"not_a_file: {problem}"))
                else:
                    files.append(path)
            out[d.name] = files
        return out

    def _load(self) -> LoadedDataset:
        root = require_dir(self.root, self.layout, self.root_env)
        skipped: list[Skip] = []
        if self.gt == "manifest":
            return self._load_manifest(root, skipped)
        people = self._identities(root, skipped)
        if not any(people.values()):
            raise DatasetError(f"no images in identity folders under {root}. Expected layout:\n{self.layout}")
        eligible: dict[str, list[Path]] = {}
        for identity, files in people.items():
            if len(files) < self.min_images:
                skipped.append(Skip(identity, f"fewer_than_{self.min_images}_images"))
            else:
                eligible[identity] = files
        if not (self.gt == "pose" or self.estimate_pose):
            items = [it for identity, files in eligible.items()
                     for it in self._items_of(identity, files, {}, skipped)]
        elif self.limit is None or self.limit >= sum(len(f) - 1 for f in eligible.values()):
            from frontal_exp.data.poses import estimate_poses

            poses = estimate_poses([p for files in eligible.values() for p in files], self.cache_dir)
            items = [it for identity, files in eligible.items()
                     for it in self._items_of(identity, files, poses, skipped)]
        else:
            items = self._sample_with_poses(eligible, skipped)
        return LoadedDataset(self.name, items, skipped)

    def manifest_path(self, root: Path) -> Path:
        return Path(self.manifest).expanduser() if self.manifest else root / "manifest.csv"

    def _load_manifest(self, root: Path, skipped: list[Skip]) -> LoadedDataset:
        """Items from the manifest's rows. Rows whose file is missing, people without a GT row
        (or whose GT file is missing) and people with too few photos are recorded in `skipped`;
        a second GT row of a person is kept as an extra frontal, not as an item."""
        rows = read_manifest(self.manifest_path(root), self.layout)
        people: dict[str, list[ManifestRow]] = {}
        for row in rows:
            problem = not_a_file(root / row.file)
            if problem:
                skipped.append(Skip(row.file, f"manifest_file_missing: {problem}"))
            else:
                people.setdefault(row.identity, []).append(row)
        for identity in sorted({r.identity for r in rows} - set(people)):
            skipped.append(Skip(identity, "no_gt"))
        listed = {(root / r.file).resolve() for r in rows}
        for files in self._identities(root, []).values():
            skipped += [Skip(str(f.relative_to(root)), "not_in_manifest") for f in files
                        if f.resolve() not in listed]
        missing_pose = [root / r.file for rs in people.values() for r in rs if r.yaw is None]
        poses: dict = {}
        if missing_pose and self.estimate_pose:
            from frontal_exp.data.poses import estimate_poses

            poses = estimate_poses(missing_pose, self.cache_dir)
        items: list[Item] = []
        extra: dict[str, list[Path]] = {}
        for identity, people_rows in sorted(people.items()):
            gts = [r for r in people_rows if r.is_gt]
            if not gts:
                skipped.append(Skip(identity, "no_gt"))
                continue
            if len(people_rows) < self.min_images:
                skipped.append(Skip(identity, f"fewer_than_{self.min_images}_images"))
                continue
            gt = root / gts[0].file
            if len(gts) > 1:
                extra[identity] = [root / r.file for r in gts[1:]]
            for r in people_rows:
                if r.is_gt:
                    continue
                path = root / r.file
                yaw, pitch, roll = ((r.yaw, r.pitch, r.roll) if r.yaw is not None
                                    else poses.get(path) or (None, None, None))
                items.append(Item(r.file, identity, path, gt, yaw, pitch, roll))
        return LoadedDataset(self.name, sorted(items, key=lambda it: it.item_id), skipped, extra)

    def _items_of(self, identity: str, files: list[Path], poses: dict, skipped: list[Skip]) -> list[Item]:
        """Every photo of one person but the GT, as items (none, and a recorded skip, without a GT)."""
        gt = self._choose_gt(files, poses)
        if gt is None:
            skipped.append(Skip(identity, "no_gt"))
            return []
        items = []
        for path in files:
            if path != gt:
                yaw, pitch, roll = poses.get(path) or (None, None, None)
                items.append(Item(f"{identity}/{path.name}", identity, path, gt, yaw, pitch, roll))
        return items

    def _sample_with_poses(self, eligible: dict[str, list[Path]], skipped: list[Skip]) -> list[Item]:
        """`limit` items drawn at random, estimating poses only for the people drawn.

        Each person with n photos owns n - 1 item slots (one photo becomes the GT). Slots are
        visited in a seeded random order; the first visit to a person estimates the poses of
        their photos and picks the GT, and each slot takes one of their other photos. People
        without a GT give no items (and are recorded), so the draw goes on until `limit`
        items are found. Only the people visited are examined, so `skipped` lists the
        people without a GT among those, and depends on `limit` and `seed`.
        """
        from frontal_exp.data.poses import estimate_poses

        rng = random.Random(self.seed)
        slots = [identity for identity, files in eligible.items() for _ in range(len(files) - 1)]
        rng.shuffle(slots)
        pending: dict[str, list[Item]] = {}
        items: list[Item] = []
        for identity in slots:
            if identity not in pending:
                files = eligible[identity]
                pending[identity] = self._items_of(identity, files, estimate_poses(files, self.cache_dir), skipped)
                rng.shuffle(pending[identity])
            if pending[identity]:
                items.append(pending[identity].pop())
                if len(items) == self.limit:
                    break
        return sorted(items, key=lambda it: it.item_id)

    def _choose_gt(self, files: list[Path], poses: dict) -> Path | None:
        if self.gt == "first":
            return files[0]
        if self.gt == "pattern":
            return next((f for f in files if fnmatch.fnmatch(f.name, self.gt_pattern)), None)
        scored = [(math.hypot(poses[f][0], poses[f][1]), f) for f in files if poses.get(f)]
        return min(scored)[1] if scored else None


@dataclass(frozen=True)
class ManifestRow:
    """One image listed in a dataset manifest (`file` relative to the dataset root)."""

    identity: str
    file: str
    is_gt: bool
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None


_TRUE = {"1", "true", "yes", "y", "gt"}


def _angle(row: dict, name: str, where: str) -> float | None:
    text = (row.get(name) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{where}: column {name} must be a number of degrees, got {text!r}") from None


def read_manifest(path: Path, layout: str = FOLDER_LAYOUT) -> list[ManifestRow]:
    """The rows of a manifest CSV: `identity`, `file`, the GT flag (`role` == gt, or `is_gt`
    true) and the optional `yaw`, `pitch`, `roll`. Other columns (a source, notes) are ignored."""
    if not path.is_file():
        raise DatasetError(f"dataset manifest {path} not found; set dataset.manifest=/path/to/manifest.csv "
                           f"or use another dataset.gt. Expected:\n{layout}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        missing = {"identity", "file"} - columns
        if missing or not columns & {"role", "is_gt"}:
            raise DatasetError(f"dataset manifest {path} needs columns identity, file and role (gt | angled) "
                               f"or is_gt (1 | 0); it has {sorted(columns)}")
        rows = []
        for n, row in enumerate(reader, start=2):
            where = f"{path}, line {n}"
            flag = (row.get("role") or row.get("is_gt") or "").strip().lower()
            rows.append(ManifestRow(row["identity"].strip(), row["file"].strip(), flag in _TRUE,
                                    _angle(row, "yaw", where), _angle(row, "pitch", where),
                                    _angle(row, "roll", where)))
    return rows


class LfwDataset(FolderDataset):
    """Labeled Faces in the Wild (`lfw/Name/Name_NNNN.jpg`): people with at least 2 photos.

    Same options as `FolderDataset`; `gt=first` takes `Name_0001`.
    """

    name = "lfw"
    layout = LFW_LAYOUT
    root_env = "LFW_ROOT"
