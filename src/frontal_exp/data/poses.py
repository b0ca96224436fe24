"""Estimated head pose of dataset photos (MediaPipe mesh), cached on disk by file identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

from frontal_exp.errors import BadImageError
from frontal_exp.images import read_image


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def estimate_poses(paths: list[Path], cache_dir: str | os.PathLike | None = None) -> dict[Path, tuple[float, float, float] | None]:
    """(yaw, pitch, roll) per image, None when no face mesh was found or the file is bad."""
    from frontal_exp.face3d.pose import estimate_head_pose

    cache_file = Path(cache_dir) / "poses.json" if cache_dir else None
    cache: dict[str, list[float] | None] = {}
    if cache_file and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    out: dict[Path, tuple[float, float, float] | None] = {}
    dirty = False
    for path in paths:
        key = _file_key(path)
        if key not in cache:
            try:
                pose = estimate_head_pose(read_image(path))
            except BadImageError:
                pose = None
            cache[key] = None if pose is None else [pose.yaw, pose.pitch, pose.roll]
            dirty = True
        value = cache[key]
        out[path] = None if value is None else (value[0], value[1], value[2])
    if cache_file and dirty:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    return out
