"""Estimated head pose of dataset photos (MediaPipe mesh), cached on disk per photo."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from frontal_exp.cache import atomic_write
from frontal_exp.errors import BadImageError
from frontal_exp.fingerprint import code_fingerprint
from frontal_exp.images import read_image
from frontal_exp.quiet import progress_bar


def estimator_version() -> str:
    """Changes whenever estimated poses could change: the code of this module and of what it
    imports (face3d's pose fit, face mesh, canonical mesh), MediaPipe's version, the packaged
    fallback detector (see `frontal_exp.fingerprint`)."""
    return code_fingerprint(__name__)


def _entry(cache_dir: Path, path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    version = hashlib.sha1(estimator_version().encode()).hexdigest()[:12]
    return cache_dir / "poses" / version / key[:2] / f"{key}.json"


def estimate_poses(
    paths: list[Path], cache_dir: str | os.PathLike | None = None
) -> dict[Path, tuple[float, float, float] | None]:
    """(yaw, pitch, roll) per image, None when no face mesh was found or the file is bad.

    One small file per photo (written atomically), so parallel jobs share the cache safely.
    """
    from frontal_exp.face3d.pose import estimate_head_pose

    out: dict[Path, tuple[float, float, float] | None] = {}
    for path in progress_bar(paths, "pose estimation", unit="image"):
        entry = _entry(Path(cache_dir), path) if cache_dir else None
        if entry is not None and entry.is_file():
            try:
                value = json.loads(entry.read_text())
                out[path] = None if value is None else tuple(value)
                continue
            except (OSError, json.JSONDecodeError):
                pass  # damaged entry: estimate again
        try:
            pose = estimate_head_pose(read_image(path))
        except BadImageError:
            pose = None
        value = None if pose is None else [pose.yaw, pose.pitch, pose.roll]
        out[path] = None if value is None else tuple(value)
        if entry is not None:
            atomic_write(entry, json.dumps(value).encode())
    return out
