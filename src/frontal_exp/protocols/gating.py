"""Gated frontalization: use the frontalizer (or the fused probe) only where a learned rule
says it helps, with the rule learned on other identities than the items it is applied to.

The rule is a threshold on one per-item feature (|yaw|, |pitch|, the angled face's detector
score, ...): "frontalize when abs_yaw >= 31.5", "always", or "never". Items are split into
`folds` folds BY IDENTITY (every item of a person in one fold; fewer identities than folds:
one fold per identity). For each fold the rule is chosen on the items of the OTHER folds
(the calibration items), as the candidate with the highest mean gain over them, and applied
to the fold's own items; the fold's items never influence their own rule.

"never" (gain 0) is always a candidate and wins ties, and the best rule replaces it only
when (1) its mean calibration gain exceeds `min_gain` by more than `min_z` standard errors
(clustered by identity: a person's items are not independent evidence), and (2) with `validate`, the same learning procedure, cross-validated by identity WITHIN the
calibration items (nested), gains more than `min_gain` on the calibration identities it did
not learn from. (2) guards against the selection noise of many candidate thresholds and
against a rule carried by one person; it needs at least 2 identities in the calibration
items, so with `validate` a data set of 2 identities always gets "never".

An item the rule does not fire on gets the angled face as its result: frontal embedding =
angle embedding, frontal_to_gt = fused_to_gt = angle_to_gt, and the frontalizer's failures
on it (no face in the frontal, ...) no longer apply: a gated system never frontalizes it.
Every downstream metric (Net Gain, CI, win / tie rate, by_pose, identification, Fusion Gain)
then follows from the records, paired as usual.

Gain of a calibration item (an item whose angled and GT faces were found): mode `frontal`,
frontal_to_gt - angle_to_gt; mode `fuse`, fused_to_gt - angle_to_gt. When the frontalizer
lost the face (frontalize / enhance failed, no face in the frontal), the gated system would
lose the item if it fired: scored as a similarity of -1 (the worst cosine), so the rule
learns to stay off where the frontalizer fails, instead of ignoring those items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from frontal_exp.errors import ConfigError

#: the similarity a lost face counts as when a rule is learned (see module docstring)
LOST_FACE_SIMILARITY = -1.0
#: problems of the frontalize / enhance / embed-frontal stages: they vanish where the gate is off
FRONTAL_STAGE_PROBLEMS = ("frontalize_failed", "enhance_failed", "no_face_frontal")
#: prefix of `frontal_key` for items the gate kept at the angle (see GatedImageView)
GATE_OFF_KEY = "gate_off:"
MODES = ("frontal", "fuse")


class GatingError(ConfigError):
    """A gated run cannot be calibrated honestly (e.g. fewer than 2 identities)."""


def _abs(x: float | None) -> float | None:
    return None if x is None else abs(float(x))


def _opt(x: float | None) -> float | None:
    return None if x is None else float(x)


#: feature name -> (value of an item record or None, the directions a rule may take:
#: ">=": fires on large values, "<=": on small ones)
FEATURES: dict[str, tuple[Callable[[object], float | None], tuple[str, ...]]] = {
    "abs_yaw": (lambda r: _abs(r.yaw), (">=",)),
    "abs_pitch": (lambda r: _abs(r.pitch), (">=",)),
    "abs_roll": (lambda r: _abs(r.roll), (">=",)),
    "yaw": (lambda r: _opt(r.yaw), (">=", "<=")),
    "pitch": (lambda r: _opt(r.pitch), (">=", "<=")),
    # a low detector score on the angled face: a hard face, where frontalizing may pay
    "angle_det_score": (lambda r: _opt(r.angle_det_score), ("<=",)),
}


@dataclass(frozen=True)
class GateSpec:
    """How the gate is learned (see module docstring)."""

    mode: str = "frontal"
    features: tuple[str, ...] = ("abs_yaw",)
    folds: int = 5
    min_gain: float = 0.0
    min_z: float = 1.0
    validate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"model.mode: {self.mode!r} is not a gate mode; choose from {list(MODES)}")
        if not self.features:
            raise ConfigError(f"model.features: give at least one of {sorted(FEATURES)}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ConfigError(f"model.features: unknown feature(s) {unknown}; choose from {sorted(FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"model.features: {list(self.features)} names a feature twice")
        if self.folds < 2:
            raise ConfigError(f"model.folds: {self.folds}; a gate needs at least 2 folds (by identity)")
        if not (self.min_gain >= 0 and math.isfinite(self.min_gain)):
            raise ConfigError(f"model.min_gain: {self.min_gain}; must be a finite number >= 0")
        if not (self.min_z >= 0 and math.isfinite(self.min_z)):
            raise ConfigError(f"model.min_z: {self.min_z}; must be a finite number >= 0")

    @property
    def gain_name(self) -> str:
        return "net_gain" if self.mode == "frontal" else "fusion_gain"


ALWAYS = "always"


@dataclass(frozen=True)
class Rule:
    """Where the gate fires (uses the frontalizer): `never` (feature None), `always` (feature
    "always", every item), or `feature op threshold` on items whose feature is known (an
    infinite threshold: every such item, shown as "<feature> known")."""

    feature: str | None = None
    op: str = ">="
    threshold: float = math.inf

    @property
    def never(self) -> bool:
        return self.feature is None

    @property
    def always(self) -> bool:
        return self.feature == ALWAYS

    @property
    def has_threshold(self) -> bool:
        return not (self.never or self.always) and math.isfinite(self.threshold)

    def fires(self, value: float | None) -> bool:
        if self.never or self.always:
            return self.always
        if value is None or not math.isfinite(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def fires_on(self, values: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Where the rule fires on `n` items with feature values `values` (NaN: missing)."""
        if self.never or self.always:
            return np.full(n, self.always, dtype=bool)
        v = np.asarray(values[self.feature], dtype=np.float64)
        return np.array([self.fires(float(x) if math.isfinite(x) else None) for x in v], dtype=bool)

    def __str__(self) -> str:
        if self.never or self.always:
            return "never" if self.never else ALWAYS
        if not math.isfinite(self.threshold):
            return f"{self.feature} known"
        return f"{self.feature} {self.op} {self.threshold:.6g}"


@dataclass
class LearnedRule:
    rule: Rule
    #: mean gain over the calibration items of the chosen rule (0 for never)
    mean_gain: float
    #: mean gain over them with the frontalizer always on
    mean_gain_always: float
    n_calibration: int
    n_fired: int
    #: standard error of the chosen (or, for never, the best rejected) rule's mean gain
    se: float = float("nan")


def clustered_se(per_item: np.ndarray, groups: Sequence[str] | None = None) -> float:
    """Standard error of the mean of `per_item`, with the items of a group (a person)
    treated as one draw (a cluster-robust SE): what generalizing to new people is uncertain
    by. Without groups, every item is its own group. Inf with fewer than 2 groups."""
    x = np.asarray(per_item, dtype=np.float64)
    n = x.size
    labels = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    g = int(labels.max()) + 1 if n else 0
    if g < 2:
        return float("inf")
    residual_sums = np.bincount(labels, weights=x - x.mean(), minlength=g)
    return float(math.sqrt(g / (g - 1) * np.sum(residual_sums**2)) / n)


def learn_rule(
    values: dict[str, np.ndarray], gains: np.ndarray, features: Sequence[str], min_gain: float = 0.0,
    min_z: float = 0.0, groups: Sequence[str] | None = None,
) -> LearnedRule:
    """The rule with the highest mean gain over the calibration items.

    `values[f]` holds each calibration item's feature value (NaN where missing: a threshold
    rule never fires there); `gains` each item's gain if the rule fires. Candidates: "never"
    (gain 0), "always", and per feature and direction every item with a known value and the
    midpoints between consecutive distinct calibration values as thresholds (">=": fire at
    or above; "<=": at or below). The best rule is used only when its mean gain exceeds
    `min_gain` by more than `min_z` standard errors (of the mean over the calibration items
    of its per-item gain, 0 where it does not fire; clustered by `groups`, the items'
    identities, see `clustered_se`). Among equal scores "never" wins, then
    the rule firing on fewer items, then the earlier candidate in the order above.
    """
    gains = np.asarray(gains, dtype=np.float64)
    n = gains.size
    if n == 0:
        return LearnedRule(Rule(), 0.0, float("nan"), 0, 0)
    tol = 1e-12
    best = (Rule(), 0.0, 0)  # (rule, summed gain, items fired on)

    def consider(rule: Rule, total: float, count: int) -> None:
        nonlocal best
        if total > best[1] + tol or (abs(total - best[1]) <= tol and not best[0].never and count < best[2]):
            best = (rule, total, count)

    consider(Rule(ALWAYS), float(gains.sum()), n)
    for name in features:
        v = np.asarray(values[name], dtype=np.float64)
        have = np.isfinite(v)
        if not have.any():
            continue
        for op in FEATURES[name][1]:
            sign = 1.0 if op == ">=" else -1.0  # "v <= t" is "-v >= -t"
            vals, gs = sign * v[have], gains[have]
            order = np.argsort(vals, kind="stable")
            sorted_vals, sorted_gains = vals[order], gs[order]
            distinct = np.unique(sorted_vals)  # ascending
            # summed gain and count of the items at or above each distinct value
            starts = np.searchsorted(sorted_vals, distinct, side="left")
            tail_sum = np.concatenate([np.cumsum(sorted_gains[::-1])[::-1], [0.0]])
            thresholds = np.concatenate([[-np.inf], (distinct[:-1] + distinct[1:]) / 2])
            for t, start in zip(thresholds, starts, strict=True):
                consider(Rule(name, op, float(sign * t)), float(tail_sum[start]), int(sorted_vals.size - start))
    rule, total, fired = best
    always = float(gains.mean())
    if rule.never:
        return LearnedRule(Rule(), 0.0, always, n, 0)
    se = clustered_se(np.where(rule.fires_on(values, n), gains, 0.0), groups)
    if not total / n > min_gain + min_z * se + tol:
        return LearnedRule(Rule(), 0.0, always, n, 0, se)
    return LearnedRule(rule, total / n, always, n, fired, se)


def assign_folds(identities: Iterable[str], folds: int, seed: int = 0) -> tuple[dict[str, int], int]:
    """Fold of each identity (seeded, balanced by identity count) and the number of folds:
    `folds`, or one per identity when there are fewer identities than that."""
    names = sorted(set(identities))
    if len(names) < 2:
        raise GatingError(
            f"model=gated learns its rule on other identities than the items it is applied to, and the "
            f"data has {len(names)} identit{'y' if len(names) == 1 else 'ies'} ({names}); it needs at least 2"
        )
    k = min(folds, len(names))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[j]: pos % k for pos, j in enumerate(order)}, k


def cross_validated_gain(values: dict[str, np.ndarray], gains: np.ndarray, identities: Sequence[str],
                         spec: GateSpec) -> float:
    """Mean gain of the rule-learning procedure on items it did not learn from: the items are
    split into folds by identity, each fold gated by the rule learned on the others. NaN with
    fewer than 2 identities."""
    gains = np.asarray(gains, dtype=np.float64)
    if len(set(identities)) < 2:
        return float("nan")
    fold_of, k = assign_folds(identities, spec.folds, spec.seed)
    folds = np.array([fold_of[i] for i in identities])
    contribution = np.zeros(gains.size)
    for f in range(k):
        held = folds == f
        rule = learn_rule({n: v[~held] for n, v in values.items()}, gains[~held], spec.features,
                          spec.min_gain, spec.min_z, [i for i, h in zip(identities, held, strict=True) if not h]).rule
        on = rule.fires_on({n: v[held] for n, v in values.items()}, int(held.sum()))
        contribution[held] = np.where(on, gains[held], 0.0)
    return float(contribution.mean())


def learn_gate(values: dict[str, np.ndarray], gains: np.ndarray, identities: Sequence[str],
               spec: GateSpec) -> tuple[LearnedRule, float]:
    """The rule learned on calibration items (`learn_rule`) and, with `spec.validate`, its
    procedure's cross-validated gain within them (by identity): a rule whose procedure does
    not gain more than `min_gain` on held-out calibration identities is replaced by never."""
    learned = learn_rule(values, gains, spec.features, spec.min_gain, spec.min_z, identities)
    if not spec.validate or learned.rule.never:
        return learned, float("nan")
    cv = cross_validated_gain(values, gains, identities, spec)
    if not cv > spec.min_gain + 1e-12:  # NaN (one identity) too: the rule cannot be validated
        return LearnedRule(Rule(), 0.0, learned.mean_gain_always, learned.n_calibration, 0, learned.se), cv
    return learned, cv


def calibration_gain(rec, mode: str) -> float | None:
    """The gain of an item if the gate fires on it; None when the item cannot be scored
    either way (no angled or GT face: unpaired whatever the gate does)."""
    if rec.angle_to_gt is None:
        return None
    if rec.paired:
        probe = rec.frontal_to_gt if mode == "frontal" else rec.fused_to_gt
        if probe is not None:
            return float(probe) - float(rec.angle_to_gt)
    problems = [p for p in rec.problems.split(",") if p]
    if problems and all(p in FRONTAL_STAGE_PROBLEMS for p in problems):
        return LOST_FACE_SIMILARITY - float(rec.angle_to_gt)
    return None


def keep_angle(rec) -> bool:
    """Make a record's result the angled face itself (the gate did not fire). Returns whether
    the item was unpaired by a frontal-stage failure (and so is paired now)."""
    bypassed = rec.status in FRONTAL_STAGE_PROBLEMS
    rec.frontal_embedding = rec.angle_embedding
    rec.frontal_face = rec.angle_face
    rec.frontal_det_score = rec.angle_det_score
    rec.frontal_to_gt = rec.angle_to_gt
    rec.fused_to_gt = rec.angle_to_gt  # normalize(e + w e) = e
    rec.frontal_to_angle = 1.0 if rec.angle_embedding is not None else None
    if rec.frontal_key is not None:
        rec.frontal_key = GATE_OFF_KEY + rec.frontal_key
    problems = [p for p in rec.problems.split(",") if p]
    kept = [p for p in problems if p not in FRONTAL_STAGE_PROBLEMS]
    rec.problems = ",".join(kept)  # already in pipeline (STATUSES) order
    rec.status = kept[0] if kept else "ok"
    return bypassed


@dataclass
class GateOutcome:
    """What applying the gate to a run's records produced."""

    metrics: dict[str, float]
    params: dict[str, str]
    #: one row per fold: its identities, calibration size, learned rule and gains
    folds: pd.DataFrame
    #: per record (same order): gate_fold, gate_on, inner_status, inner_frontal_to_gt, inner_fused_to_gt
    item_columns: list[dict]
    #: frontal_key of each item kept at the angle -> its angled image's path
    angle_images: dict[str, str] = field(default_factory=dict)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def apply_gate(records: list, spec: GateSpec) -> GateOutcome:
    """Learn the rule per fold (on the other folds' items) and apply it to the fold's items,
    rewriting the records of items it does not fire on in place (see module docstring)."""
    fold_of, k = assign_folds((r.identity for r in records), spec.folds, spec.seed)
    # the inner model's own results, before the gate rewrites any record
    ungated = [r for r in records if r.paired]
    ungated_metrics = {
        "gate.ungated_n": len(ungated),
        "gate.ungated_net_gain": _mean([r.frontal_to_gt - r.angle_to_gt for r in ungated]),
        "gate.ungated_fusion_gain": _mean([r.fused_to_gt - r.angle_to_gt for r in ungated if r.fused_to_gt is not None]),
    }
    gains = [calibration_gain(r, spec.mode) for r in records]
    values = {f: np.array([np.nan if (v := FEATURES[f][0](r)) is None else v for r in records], dtype=np.float64)
              for f in spec.features}
    folds = np.array([fold_of[r.identity] for r in records])
    usable = np.array([g is not None for g in gains])
    gain_arr = np.array([np.nan if g is None else g for g in gains], dtype=np.float64)
    metrics: dict[str, float] = {"gate.folds": k}
    params: dict[str, str] = {"gate.mode": spec.mode, "gate.features": ",".join(spec.features),
                              "gate.fold_scheme": f"{k}-fold by identity" if k < len(fold_of)
                              else "leave-one-identity-out"}
    inner = [{"gate_fold": int(folds[i]), "inner_status": r.status, "inner_frontal_to_gt": r.frontal_to_gt,
              "inner_fused_to_gt": r.fused_to_gt} for i, r in enumerate(records)]
    rows, angle_images = [], {}
    fires = np.zeros(len(records), dtype=bool)
    for f in range(k):
        held = folds == f
        cal = ~held & usable
        cal_ids = [records[i].identity for i in np.flatnonzero(cal)]
        learned, validation = learn_gate({name: v[cal] for name, v in values.items()}, gain_arr[cal],
                                         cal_ids, spec)
        rule = learned.rule
        fires[held] = rule.fires_on({name: v[held] for name, v in values.items()}, int(held.sum()))
        held_usable = held & usable
        rows.append({
            "fold": f,
            "identities": ";".join(sorted(n for n, g in fold_of.items() if g == f)),
            "n_identities": sum(g == f for g in fold_of.values()),
            "n_items": int(held.sum()),
            "n_calibration": learned.n_calibration,
            "rule": str(rule),
            "feature": "" if rule.never or rule.always else rule.feature,
            "op": rule.op if rule.has_threshold else "",
            "threshold": rule.threshold if rule.has_threshold else float("nan"),
            "calibration_gain": learned.mean_gain,
            "calibration_gain_se": learned.se,
            "calibration_gain_always": learned.mean_gain_always,
            "validation_gain": validation,
            "calibration_n_on": learned.n_fired,
            "n_on": int((fires & held).sum()),
            "heldout_gain": _mean([float(gain_arr[i]) if fires[i] else 0.0 for i in np.flatnonzero(held_usable)]),
            "heldout_gain_always": _mean([float(gain_arr[i]) for i in np.flatnonzero(held_usable)]),
        })
        metrics[f"gate.fold_{f}.never"] = float(rule.never)
        metrics[f"gate.fold_{f}.n_on"] = rows[-1]["n_on"]
        metrics[f"gate.fold_{f}.calibration_gain"] = learned.mean_gain
        if rule.has_threshold:
            metrics[f"gate.fold_{f}.threshold"] = rule.threshold
        params[f"gate.fold_{f}.rule"] = str(rule)
    bypassed = 0
    for i, rec in enumerate(records):
        inner[i]["gate_on"] = bool(fires[i])
        if not fires[i]:
            bypassed += keep_angle(rec)
            if rec.frontal_key is not None:
                angle_images[rec.frontal_key] = rec.angle_path
    missing = np.zeros(len(records), dtype=bool)
    for v in values.values():
        missing |= ~np.isfinite(v)
    metrics.update({
        "gate.n_on": int(fires.sum()),
        "gate.n_off": int((~fires).sum()),
        "gate.n_missing_feature": int(missing.sum()),
        "gate.frontal_failures_bypassed": bypassed,
        **ungated_metrics,
    })
    params["gate.rules"] = "; ".join(f"{row['fold']}: {row['rule']}" for row in rows)
    return GateOutcome(metrics, params, pd.DataFrame(rows), inner, angle_images)


class GatedImageView:
    """The run's frontal images as the gated system produced them: the angled photo for items
    the gate kept at the angle, the stage cache's image otherwise (for figures)."""

    def __init__(self, cache, angle_images: dict[str, str]) -> None:
        self._cache = cache
        self._angle_images = dict(angle_images)

    def get(self, key: str):
        if key in self._angle_images:
            from frontal_exp.errors import BadImageError
            from frontal_exp.images import read_image

            try:
                return read_image(self._angle_images[key])
            except BadImageError:
                return None
        return self._cache.get(key)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._cache, name)


def summary_line(metrics: dict[str, float], params: dict[str, str]) -> str:
    """The one printed line about the gate: what it learned and how often it fired."""
    n_items = int(metrics["gate.n_on"] + metrics["gate.n_off"])
    gain = "Net Gain" if params.get("gate.mode") == "frontal" else "Fusion Gain"
    return (f"{'Gate':>16}: {params.get('gate.mode')} mode on {params.get('gate.features')}, "
            f"{params.get('gate.fold_scheme')}; on for {int(metrics['gate.n_on'])} of {n_items} items "
            f"({int(metrics['gate.n_missing_feature'])} missing a feature); rule per fold (learned on the "
            f"other folds' {gain}): {params.get('gate.rules')}; ungated Net Gain "
            f"{metrics['gate.ungated_net_gain']:+.4f}, Fusion Gain {metrics['gate.ungated_fusion_gain']:+.4f} "
            f"(N {int(metrics['gate.ungated_n'])})")
