"""Face verification metrics on scored pairs: k-fold accuracy (LFW protocol), ROC AUC, TAR@FAR.

Pure functions of (score, same-person label, fold) arrays; a pair is accepted as "same"
when its score is >= the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {scores.shape}, {labels.shape}")
    return scores, labels


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of pairs classified right when 'same' means score >= threshold."""
    scores, labels = _check(scores, labels)
    if scores.size == 0:
        return float("nan")
    return float(((scores >= threshold) == labels).mean())


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold with the highest accuracy on these pairs.

    Candidates are midpoints between consecutive distinct scores (plus one below and one
    above all), so the choice does not depend on a grid step; ties go to the lowest one.
    """
    scores, labels = _check(scores, labels)
    if scores.size == 0:
        return float("nan")
    u = np.unique(scores)
    candidates = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])
    # accuracy of every candidate at once: sorted scores + cumulative label counts
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    below = np.searchsorted(s, candidates, side="left")  # pairs rejected at each candidate
    neg_below = np.concatenate([[0], np.cumsum(~y)])[below]
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[below]
    acc = (neg_below + pos_above) / scores.size
    return float(candidates[int(np.argmax(acc))])


@dataclass
class KFoldResult:
    """Per-fold accuracy (threshold chosen on the other folds) and its mean and std."""

    accuracies: np.ndarray
    thresholds: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies)) if self.accuracies.size else float("nan")

    @property
    def std(self) -> float:
        # population std over folds, as LFW results are usually reported
        return float(np.std(self.accuracies)) if self.accuracies.size else float("nan")


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> KFoldResult:
    """The LFW protocol: for each fold, pick the threshold on the others, test on it."""
    scores, labels = _check(scores, labels)
    folds = np.asarray(folds)
    ids = np.unique(folds)
    accs, ths = [], []
    for k in ids:
        test = folds == k
        train = ~test
        if not test.any() or not train.any():
            continue
        th = best_threshold(scores[train], labels[train])
        ths.append(th)
        accs.append(accuracy_at(scores[test], labels[test], th))
    return KFoldResult(np.array(accs, dtype=np.float64), np.array(ths, dtype=np.float64))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, thresholds), one point per distinct score from the strictest down, with
    (0, 0) first. FAR = share of different-person pairs accepted, TAR = of same-person pairs."""
    scores, labels = _check(scores, labels)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both same-person and different-person pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # the last index of each run of equal scores: accepting a score accepts all its ties
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    far = np.r_[0.0, fp / n_neg]
    tar = np.r_[0.0, tp / n_pos]
    thresholds = np.r_[np.inf, s[last]]
    return far, tar, thresholds


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (= P(score of a same pair > score of a different pair),
    ties counting one half)."""
    far, tar, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tar, far)) if hasattr(np, "trapezoid") else float(np.trapz(tar, far))


def tar_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> float:
    """The highest TAR over thresholds whose FAR is <= `far`.

    With N different-person pairs, FARs below 1/N cannot be resolved: then only thresholds
    accepting no impostor count (so the answer may be a strict, low TAR).
    """
    fars, tars, _ = roc_curve(scores, labels)
    ok = fars <= far + 1e-12
    return float(tars[ok].max())


def verification_metrics(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-2)
) -> dict[str, float]:
    """Accuracy mean/std over folds, its threshold, ROC AUC and TAR at each FAR."""
    scores, labels = _check(scores, labels)
    kf = kfold_accuracy(scores, labels, folds)
    out: dict[str, float] = {
        "acc_mean": kf.mean,
        "acc_std": kf.std,
        "threshold_mean": float(np.mean(kf.thresholds)) if kf.thresholds.size else float("nan"),
        "n_folds": int(kf.accuracies.size),
    }
    if labels.any() and (~labels).any():
        out["auc"] = roc_auc(scores, labels)
        for f in fars:
            out[f"tar_far_{f:g}"] = tar_at_far(scores, labels, f)
    else:
        out["auc"] = float("nan")
        for f in fars:
            out[f"tar_far_{f:g}"] = float("nan")
    return out
