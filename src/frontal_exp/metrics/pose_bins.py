"""Similarities, Net Gain and Fusion Gain binned by absolute head pose (yaw or pitch), paired
per item, each with a 95% paired-bootstrap CI; the break-even angle from which a gain holds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from frontal_exp.metrics.stats import paired_comparison

#: bin edges in degrees of |angle|; the last bin includes its upper edge
DEFAULT_EDGES: tuple[float, ...] = (0, 10, 20, 30, 45, 60, 90)

COLUMNS = ["bin", "lo", "hi", "n", "angle_to_gt", "frontal_to_gt", "net_gain", "net_gain_ci_low",
           "net_gain_ci_high", "win_rate", "fused_to_gt", "fusion_gain", "fusion_gain_ci_low", "fusion_gain_ci_high"]


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
    fused_to_gt: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per bin (empty bins kept, n = 0) over items with both similarities.

    Items whose pose is unknown (nan) or outside the edges get an extra row `unknown` /
    `outside`, so the counts add up to the number of paired items. With `fused_to_gt` (the
    fused probe's similarity per item), `fusion_gain` = mean(fused_to_gt - angle_to_gt) per
    bin on the same items; without it those columns are nan.
    """
    angles = np.asarray(angles, dtype=np.float64)
    a = np.asarray(angle_to_gt, dtype=np.float64)
    b = np.asarray(frontal_to_gt, dtype=np.float64)
    f = np.full_like(a, np.nan) if fused_to_gt is None else np.asarray(fused_to_gt, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    angles, a, b, f = angles[keep], a[keep], b[keep], f[keep]
    idx = assign_bins(angles, edges)
    rows = []
    for k in range(len(edges) - 1):
        m = idx == k
        rows.append(_row(bin_label(edges[k], edges[k + 1]), edges[k], edges[k + 1], a[m], b[m], f[m], n_boot, seed))
    for name, mask in (("unknown", np.isnan(angles)), ("outside", (idx == -1) & ~np.isnan(angles))):
        if mask.any():
            rows.append(_row(name, float("nan"), float("nan"), a[mask], b[mask], f[mask], n_boot, seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(name: str, lo: float, hi: float, a: np.ndarray, b: np.ndarray, f: np.ndarray, n_boot: int,
         seed: int) -> dict:
    c = paired_comparison(a, b, n_boot=n_boot, seed=seed)
    fused = ~np.isnan(f)
    fc = paired_comparison(a[fused], f[fused], n_boot=n_boot, seed=seed)
    return {"bin": name, "lo": lo, "hi": hi, "n": c.n, "angle_to_gt": c.mean_a, "frontal_to_gt": c.mean_b,
            "net_gain": c.mean_diff, "net_gain_ci_low": c.ci_low, "net_gain_ci_high": c.ci_high,
            "win_rate": c.win_rate, "fused_to_gt": fc.mean_b, "fusion_gain": fc.mean_diff,
            "fusion_gain_ci_low": fc.ci_low, "fusion_gain_ci_high": fc.ci_high}


#: a mean gain at or below this is no gain (identity's fused probe differs from the angle's
#: embedding by rounding only, ~1e-17)
GAIN_TOLERANCE = 1e-9


def break_even(table: pd.DataFrame, gain: str = "net_gain") -> float | None:
    """The lowest bin edge from which, in every bin above it, the mean gain is positive and
    its 95% CI lower bound >= 0 (bins with fewer than 2 items have no CI and are passed
    over); None when the highest such bin does not gain, or there is no such bin. A bin whose
    gain is exactly 0 (a model returning its input: CI [0, 0]) is no gain."""
    bins = table[table.lo.notna() & (table.n >= 2)].sort_values("lo")
    start = None
    for row in bins.itertuples():
        low, mean = getattr(row, f"{gain}_ci_low"), getattr(row, gain)
        if np.isnan(low) or low < 0 or not mean > GAIN_TOLERANCE:
            start = None
        elif start is None:
            start = float(row.lo)
    return start
