"""Helpers shared by the benchmark and golden-file scripts (run as `python benchmarks/X.py`)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def timed(fn: Callable[[], object], repeats: int, device=None) -> float:
    """Median seconds of `fn()` after one warm-up call; CUDA work is waited for (on `device`,
    or whenever CUDA is available when no device is given)."""
    import torch

    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def reference_version(path: Path, given: str | None) -> str:
    """The reference checkout's commit (recorded in golden files), or what the user gave."""
    if given:
        return given
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout; pass --reference-version)"


def write_golden(path: Path, golden: dict, seed: int, reference: str) -> None:
    """Save a golden file with what made it (seed, reference name and commit, torch version)."""
    import torch

    golden["meta.seed"] = np.int64(seed)
    golden["meta.reference"] = np.str_(reference)
    golden["meta.torch"] = np.str_(torch.__version__)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **golden)
    print(f"wrote {path} ({path.stat().st_size:,} bytes, {len(golden)} arrays)")
