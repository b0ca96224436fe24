"""Similarities and Net Gain binned by absolute head pose (yaw or pitch), paired per item."""

from __future__ import annotations

import numpy as np
import pandas as pd

from frontal_exp.metrics.stats import paired_comparison

#: bin edges in degrees of |angle|; the last bin includes its upper edge
DEFAULT_EDGES: tuple[float, ...] = (0, 10, 20, 30, 45, 60, 90)

COLUMNS = ["bin", "lo", "hi", "n", "angle_to_gt", "frontal_to_gt", "net_gain", "net_gain_ci_low",
           "net_gain_ci_high", "win_rate"]


def bin_label(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def assign_bins(angles: np.ndarray, edges: tuple[float, ...] | list[float]) -> np.ndarray:
    """Bin index of each |angle|: [e0, e1), [e1, e2), ..., [e_{n-1}, e_n]; -1 outside or nan."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must be increasing, at least two: {edges.tolist()}")
    a = np.abs(np.asarray(angles, dtype=np.float64))
    idx = np.searchsorted(edges, a, side="right") - 1
    idx[a == edges[-1]] = edges.size - 2  # the last bin is closed on the right
    idx[(a < edges[0]) | (a > edges[-1]) | np.isnan(a)] = -1
    return idx


def pose_bin_table(
    angles: np.ndarray,
    angle_to_gt: np.ndarray,
    frontal_to_gt: np.ndarray,
    edges: tuple[float, ...] | list[float] = DEFAULT_EDGES,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per bin (empty bins kept, n = 0) over items with both similarities.

    Items whose pose is unknown (nan) or outside the edges get an extra row `unknown` /
    `outside`, so the counts add up to the number of paired items.
    """
    angles = np.asarray(angles, dtype=np.float64)
    a = np.asarray(angle_to_gt, dtype=np.float64)
    b = np.asarray(frontal_to_gt, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    angles, a, b = angles[keep], a[keep], b[keep]
    idx = assign_bins(angles, edges)
    rows = []
    for k in range(len(edges) - 1):
        rows.append(_row(bin_label(edges[k], edges[k + 1]), edges[k], edges[k + 1], a[idx == k], b[idx == k],
                         n_boot, seed))
    for name, mask in (("unknown", np.isnan(angles)), ("outside", (idx == -1) & ~np.isnan(angles))):
        if mask.any():
            rows.append(_row(name, float("nan"), float("nan"), a[mask], b[mask], n_boot, seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(name: str, lo: float, hi: float, a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> dict:
    c = paired_comparison(a, b, n_boot=n_boot, seed=seed)
    return {"bin": name, "lo": lo, "hi": hi, "n": c.n, "angle_to_gt": c.mean_a, "frontal_to_gt": c.mean_b,
            "net_gain": c.mean_diff, "net_gain_ci_low": c.ci_low, "net_gain_ci_high": c.ci_high,
            "win_rate": c.win_rate}
