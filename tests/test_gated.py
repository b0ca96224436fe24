"""model=gated: a rule learned per fold by identity on the other folds decides where the
frontalizer (or the fused probe) is used; elsewhere the result is the angled face."""

from __future__ import annotations

import copy
import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

from frontal_exp.config import instantiate_checked
from frontal_exp.errors import ConfigError
from frontal_exp.frontalizers.base import Frontalizer
from frontal_exp.pipeline import ItemRecord
from frontal_exp.protocols.frontalization import summarize
from frontal_exp.protocols.gating import (
    GateSpec,
    GatingError,
    Rule,
    apply_gate,
    assign_folds,
    clustered_se,
    learn_rule,
)


class BlurFrontalizer(Frontalizer):
    """A 'frontalizer' that only destroys detail: it hurts every face."""

    name = "blur"

    def __init__(self, sigma: float = 6.0) -> None:
        self.sigma = sigma

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), self.sigma)


def synthetic_records(seed: int = 0, n_people: int = 10, per_person: int = 12, cut: float = 30.0,
                      effect: float = 0.05, noise: float = 0.02) -> list[ItemRecord]:
    """Paired items whose frontalization gains `effect` at |yaw| >= cut and loses it below."""
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n_people):
        for j in range(per_person):
            yaw = float(rng.uniform(-60, 60))
            angle = float(rng.uniform(0.3, 0.7))
            gain = (effect if abs(yaw) >= cut else -effect) + float(rng.normal(0, noise))
            records.append(ItemRecord(f"p{p}_{j}", f"p{p}", f"p{p}/{j}.jpg", f"p{p}/gt.jpg", yaw=yaw,
                                      angle_to_gt=angle, frontal_to_gt=angle + gain,
                                      fused_to_gt=angle + gain / 2, frontal_key=f"k{p}_{j}"))
    return records


def net_gain(records: list[ItemRecord]) -> float:
    return summarize(records, [], n_boot=0)["net_gain"]


# -- the rule and the folds -------------------------------------------------------------------


def test_learned_threshold_is_near_where_frontalization_starts_to_help():
    records = synthetic_records()
    ungated = net_gain(records)
    outcome = apply_gate(records, GateSpec(folds=5))
    folds = outcome.folds
    assert len(folds) == 5
    assert (folds.feature == "abs_yaw").all() and (folds.op == ">=").all()
    assert np.all(np.abs(folds.threshold - 30.0) < 3.0), folds.threshold.tolist()
    gated = net_gain(records)
    assert gated > ungated + 0.02
    # the per-fold rules are reported as metrics and params
    for f in range(5):
        assert outcome.metrics[f"gate.fold_{f}.threshold"] == pytest.approx(folds.threshold[f])
        assert outcome.params[f"gate.fold_{f}.rule"].startswith("abs_yaw >= ")
    # the gate fires exactly on the held-out items above their fold's threshold
    fold_of = {r.item_id: row["gate_fold"] for r, row in zip(records, outcome.item_columns, strict=True)}
    for r, row in zip(records, outcome.item_columns, strict=True):
        assert row["gate_on"] == (abs(r.yaw) >= folds.threshold[fold_of[r.item_id]])
    assert outcome.metrics["gate.n_on"] == sum(row["gate_on"] for row in outcome.item_columns)


def test_fuse_mode_learns_on_the_fusion_gain():
    records = synthetic_records()
    for r in records:  # fusion helps everywhere, frontalization only at large yaw
        r.fused_to_gt = r.angle_to_gt + 0.03
    outcome = apply_gate(records, GateSpec(mode="fuse"))
    assert (outcome.folds.rule == "always").all()
    assert (outcome.folds.calibration_n_on == outcome.folds.n_calibration).all()  # fires on every item
    assert summarize(records, [], n_boot=0)["fusion_gain"] == pytest.approx(0.03)


def test_folds_are_disjoint_by_identity_and_no_fold_learns_from_its_own_items():
    records = synthetic_records(seed=1)
    identities = sorted({r.identity for r in records})
    fold_of, k = assign_folds(identities, 5, seed=0)
    assert k == 5 and set(fold_of) == set(identities)
    assert sorted(np.bincount(list(fold_of.values()))) == [2, 2, 2, 2, 2]
    first = apply_gate(copy.deepcopy(records), GateSpec())
    by_person = {}  # every item of a person is in that person's fold
    for r, row in zip(records, first.item_columns, strict=True):
        by_person.setdefault(r.identity, set()).add(row["gate_fold"])
    assert all(len(f) == 1 for f in by_person.values())
    # rewrite fold 0's own items (frontalization now helps them everywhere, hugely): its rule
    # must not change; the other folds, which calibrate on them, learn from the change
    changed = copy.deepcopy(records)
    for r, row in zip(changed, first.item_columns, strict=True):
        if row["gate_fold"] == 0:
            r.frontal_to_gt = r.angle_to_gt + 0.5
    second = apply_gate(changed, GateSpec())
    assert second.folds.rule[0] == first.folds.rule[0]
    assert (second.folds.rule[1:] != first.folds.rule[1:]).any()


def test_fewer_identities_than_folds_is_leave_one_identity_out_and_one_identity_stops():
    fold_of, k = assign_folds(["a", "b", "c", "a"], 5)
    assert k == 3 and sorted(fold_of.values()) == [0, 1, 2]
    with pytest.raises(GatingError, match="at least 2"):
        assign_folds(["a", "a"], 5)


def test_ties_break_toward_never_and_a_rule_must_beat_it():
    values = {"abs_yaw": np.array([5.0, 20.0, 40.0, 50.0])}
    assert learn_rule(values, np.zeros(4), ["abs_yaw"]).rule.never  # unchanged faces: never
    assert learn_rule(values, np.array([0.0, 0.0, -0.1, -0.2]), ["abs_yaw"]).rule.never
    learned = learn_rule(values, np.array([0.0, 0.0, 0.1, 0.2]), ["abs_yaw"])
    assert learned.rule == Rule("abs_yaw", ">=", 30.0)  # the 0-gain items are left out
    assert learned.mean_gain == pytest.approx(0.075)
    # a margin: gains below it per calibration item are not worth the frontalizer
    assert learn_rule(values, np.array([0.0, 0.0, 0.1, 0.2]), ["abs_yaw"], min_gain=0.08).rule.never
    # a low detector score fires on small values
    scores = {"angle_det_score": np.array([0.9, 0.8, 0.5, 0.4])}
    learned = learn_rule(scores, np.array([-0.1, -0.1, 0.1, 0.2]), ["angle_det_score"])
    assert learned.rule == Rule("angle_det_score", "<=", pytest.approx(0.65))


def test_noise_alone_does_not_make_the_gate_fire_much():
    """Frontalization that does nothing on average, with noise: the validated rule stays near never."""
    records = synthetic_records(seed=3, effect=0.0, noise=0.05)
    apply_gate(records, GateSpec())
    assert abs(net_gain(records)) < 0.003


def test_a_rule_that_only_one_person_supports_is_rejected_by_nested_validation():
    """One person gains a lot at large yaw, everyone else loses there: the rule learned on a
    calibration set holding that person does not hold on calibration identities left out."""
    rng = np.random.default_rng(5)
    records = []
    for p in range(6):
        yaws = np.concatenate([rng.uniform(50, 60, 20 if p == 0 else 5), rng.uniform(0, 40, 10)])
        for j, yaw in enumerate(yaws):
            gain = 0.3 if p == 0 and yaw >= 50 else -0.05
            records.append(ItemRecord(f"p{p}_{j}", f"p{p}", "a", "g", yaw=float(yaw), angle_to_gt=0.5,
                                      frontal_to_gt=0.5 + gain + float(rng.normal(0, 0.01)), fused_to_gt=0.5))
    per_item = np.array([r.frontal_to_gt - r.angle_to_gt if r.yaw >= 50 else 0.0 for r in records])
    people = [r.identity for r in records]
    unvalidated = apply_gate(copy.deepcopy(records), GateSpec(folds=6, validate=False, min_z=0.0))
    assert (unvalidated.folds.rule != "never").sum() == 5  # every fold whose calibration holds p0
    assert unvalidated.folds.heldout_gain.sum() < 0
    validated = apply_gate(copy.deepcopy(records), GateSpec(folds=6, min_z=0.0))
    assert (validated.folds.rule == "never").all()
    assert (validated.folds.validation_gain.dropna() < 0).all() and validated.folds.validation_gain.notna().sum() == 5
    # the default z test alone also refuses it: its standard error counts people, not items
    default = apply_gate(records, GateSpec(folds=6, validate=False))
    assert (default.folds.rule == "never").all() and net_gain(records) == 0.0
    assert clustered_se(per_item, people) > 3 * clustered_se(per_item)


def test_items_without_a_pose_are_never_gated_on_and_counted():
    records = synthetic_records(seed=2)
    for r in records[::7]:
        r.yaw = None
    no_pose = {r.item_id for r in records[::7]}
    outcome = apply_gate(records, GateSpec())
    assert outcome.metrics["gate.n_missing_feature"] == len(no_pose)
    for r, row in zip(records, outcome.item_columns, strict=True):
        if r.item_id in no_pose:
            assert not row["gate_on"] and r.frontal_to_gt == r.angle_to_gt


def test_lost_faces_count_against_a_rule_and_gated_off_failures_are_bypassed():
    """Frontalization helps from 30 deg but loses the face from 45 deg: scored as a lost face
    (not left out, as a mean over survivors would), no "abs_yaw >=" rule pays any more."""
    records = synthetic_records(seed=4)
    assert (apply_gate(copy.deepcopy(records), GateSpec()).folds.rule != "never").all()  # without losses
    lost = [r for r in records if abs(r.yaw) >= 45]
    for r in lost:
        r.frontal_to_gt = r.fused_to_gt = None
        r.add_problem("no_face_frontal")
    outcome = apply_gate(records, GateSpec())
    assert (outcome.folds.rule == "never").all()
    # gated off, a lost face is no longer a failure: the angle is the result, paired
    assert outcome.metrics["gate.frontal_failures_bypassed"] == len(lost)
    assert all(r.paired and r.frontal_to_gt == r.angle_to_gt and r.fused_to_gt == r.angle_to_gt for r in records)
    assert summarize(records, [], n_boot=0)["net_gain"] == 0.0
    assert [row["inner_status"] for row in outcome.item_columns].count("no_face_frontal") == len(lost)


# -- configuration ----------------------------------------------------------------------------


def test_gated_composes_with_any_inner_model_and_shares_its_images(make_cfg):
    cfg = make_cfg("model=gated")
    gated = instantiate_checked(cfg.model, "model")
    assert gated.name == "gated-mesh3d" and gated.gate == GateSpec(seed=cfg.seed)
    inner = instantiate_checked(make_cfg("model=mesh3d").model, "model")
    assert gated.cache_key() == inner.cache_key()  # the same images, the same cache entries
    cfg = make_cfg("model=gated", "model@model.inner=identity", "model.mode=fuse", "model.folds=3",
                   "model.features=[abs_yaw,angle_det_score]")
    gated = instantiate_checked(cfg.model, "model")
    assert gated.inner.name == "identity" and gated.name == "gated-fuse-identity"
    assert gated.gate.mode == "fuse" and gated.gate.folds == 3
    assert gated.gate.features == ("abs_yaw", "angle_det_score")
    fused = instantiate_checked(make_cfg("model=gated_fuse").model, "model")  # the recipe's option
    assert fused.gate.mode == "fuse" and fused.name == "gated-fuse-mesh3d" and fused.cache_key() == inner.cache_key()
    for bad, match in (("model.mode=sometimes", "mode"), ("model.features=[abs_yawn]", "abs_yawn"),
                       ("model.folds=1", "folds"), ("+model.inner.strenght=0.5", "strenght")):
        with pytest.raises(ConfigError, match=match):
            instantiate_checked(make_cfg("model=gated", bad).model, "model")


# -- end to end -------------------------------------------------------------------------------


def test_a_frontalizer_that_hurts_every_face_is_gated_off_everywhere(make_cfg, identity_tree, tmp_path):
    """Real photos, real embeddings: gated blur has Net Gain exactly 0 on the items identity pairs."""
    from frontal_exp.evaluation import evaluate

    common = ["dataset=folder", f"dataset.root={identity_tree}", "dataset.gt=pattern", "tracking.enabled=false",
              "eval.bootstrap=50", "tracking.log_images=false"]
    result = evaluate(make_cfg(*common, "model=gated", "model@model.inner=identity",
                               f"model.inner._target_={__name__}.BlurFrontalizer"), output_dir=tmp_path / "job")
    m = result.metrics
    assert m["gate.ungated_net_gain"] < -0.05  # the blur hurts
    assert m["gate.folds"] == 3 and (result.tables["gating"].rule == "never").all()
    assert m["net_gain"] == 0.0 and m["fusion_gain"] == 0.0 and m["tie_rate"] == 1.0
    baseline = evaluate(make_cfg(*common, "model=identity"))
    assert m["n"] == baseline.metrics["n"] == 6
    items = pd.read_csv(tmp_path / "job" / "items.csv")
    assert not items.gate_on.any() and (items.status == "ok").all()
    # blurred, every face is further from its GT, or lost (then bypassed by the gate)
    assert (items.inner_frontal_to_gt.fillna(-1.0) < items.angle_to_gt).all()
    assert m["gate.frontal_failures_bypassed"] == (items.inner_status != "ok").sum()


def test_one_identity_stops_before_any_model_runs(make_cfg, identity_tree, tmp_path):
    import shutil

    from frontal_exp.evaluation import evaluate

    root = tmp_path / "one"
    shutil.copytree(identity_tree / "astronaut", root / "astronaut")
    cfg = make_cfg("model=gated", "dataset=folder", f"dataset.root={root}", "dataset.gt=pattern",
                   "tracking.enabled=false", "dataset.estimate_pose=false")
    with pytest.raises(GatingError, match=r"1 identity \(\['astronaut'\]\); it needs at least 2"):
        evaluate(cfg)
    computed = [f for f in (tmp_path / "outputs" / "cache").rglob("*") if f.is_file() and f.name != "KEY.txt"]
    assert not computed  # no image was embedded or frontalized


def test_end_to_end_on_the_demo_reports_the_rule_per_fold(make_cfg, tmp_path):
    from frontal_exp.evaluation import evaluate, format_results

    cfg = make_cfg("model=gated", "model.folds=2", "dataset.limit=8", "tracking.enabled=false",
                   "eval.bootstrap=50", "eval.grid_samples=2", "protocol.analyses=[by_pose]")
    result = evaluate(cfg, output_dir=tmp_path / "job")
    folds = pd.read_csv(tmp_path / "job" / "gating.csv")
    assert list(folds.fold) == [0, 1] and folds.n_items.sum() == 8
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    for f in (0, 1):
        assert saved["params"][f"gate.fold_{f}.rule"] == folds.rule[f]
        assert saved["metrics"][f"gate.fold_{f}.never"] == float(folds.rule[f] == "never")
    items = pd.read_csv(tmp_path / "job" / "items.csv")
    assert {"gate_fold", "gate_on", "inner_frontal_to_gt"} <= set(items.columns)
    # the gated results are what every metric reads: off items are the angle itself
    off = items[~items.gate_on & (items.status == "ok")]
    assert (off.frontal_to_gt == off.angle_to_gt).all()
    on = items[items.gate_on & (items.status == "ok")]
    assert (on.frontal_to_gt == on.inner_frontal_to_gt).all()
    expected = (on.frontal_to_gt - on.angle_to_gt).sum() / (items.status == "ok").sum()
    assert result.metrics["net_gain"] == pytest.approx(expected)
    assert result.metrics["gate.n_on"] == len(items[items.gate_on])
    text = format_results(result.metrics, result.params)
    assert "Gate: frontal mode on abs_yaw" in text and "gate." not in text.splitlines()[0]
    assert "triplets" in result.figures and not math.isnan(result.metrics["gate.ungated_net_gain"])
