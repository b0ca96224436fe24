"""Paired statistics for similarity comparisons: bootstrap CIs, win rate, Wilcoxon test."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean; (nan, nan) for no data."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    if values.size == 1 or n_boot <= 0:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # chunks keep memory flat for large N
    chunk = max(1, 2_000_000 // values.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        means[start:stop] = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (nan when undefined)."""
    from scipy.stats import wilcoxon

    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.size < 2 or np.allclose(diffs, 0):
        return float("nan")
    return float(wilcoxon(diffs, zero_method="wilcox").pvalue)


@dataclass
class PairedComparison:
    """B vs A on the same items: mean(B) - mean(A), with its uncertainty."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    win_rate: float
    tie_rate: float
    wilcoxon_p: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def paired_comparison(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> PairedComparison:
    """Compare paired scores. `win_rate` is the share of items where b > a, `tie_rate` where
    b == a (e.g. a frontalizer that returns near-frontal faces unchanged); the Wilcoxon test
    leaves ties out."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have the same shape, got {a.shape} and {b.shape}")
    nan = float("nan")
    if a.size == 0:
        return PairedComparison(0, nan, nan, nan, nan, nan, nan, nan, nan)
    diff = b - a
    lo, hi = bootstrap_ci(diff, n_boot=n_boot, seed=seed)
    return PairedComparison(
        n=int(a.size),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=float(diff.mean()),
        ci_low=lo,
        ci_high=hi,
        win_rate=float((diff > 0).mean()),
        tie_rate=float((diff == 0).mean()),
        wilcoxon_p=wilcoxon_p(diff),
    )
