"""What the MLflow UI shows: experiments of the classic ML kind (runs list, not the GenAI
"Overview"), runs named by what distinguishes them, and a Markdown description per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from frontal_exp.tracking.mlflow_logger import (
    EXPERIMENT_KIND_TAG,
    ML_EXPERIMENT_KIND,
    client_for,
    default_sqlite_uri,
    ensure_experiment,
    run_name_of,
)
from frontal_exp.tracking.run_notes import (
    NOTE_TAG,
    VIEW_ID,
    VIEW_NAME,
    VIEW_TAG_PREFIX,
    ensure_metrics_view,
)


def test_experiments_are_marked_ml_unless_a_kind_is_set(tmp_path):
    client = client_for(default_sqlite_uri(tmp_path))
    new = ensure_experiment(client, "fresh", tmp_path)
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT_KIND
    # an experiment made before the tag existed gets it when the project next uses it
    old = client.create_experiment("older")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(client, "older", tmp_path) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT_KIND
    # a kind the user chose is kept
    mine = client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    ensure_experiment(client, "mine", tmp_path)
    assert client.get_experiment(mine).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_single_run_name_is_short_and_tracking_run_name_wins(make_cfg):
    params = {"protocol": "frontalization", "model": "mesh3d", "enhancer": "none", "embedder": "emb",
              "dataset": "demo"}
    assert run_name_of(make_cfg(), params) == "mesh3d | emb | demo"
    assert run_name_of(make_cfg(), {**params, "enhancer": "sharp"}) == "mesh3d+sharp | emb | demo"
    assert run_name_of(make_cfg("tracking.run_name=mine"), params) == "mine"


def test_a_sweep_varies_what_its_command_line_swept_however_hydra_rewrites_it():
    from frontal_exp.tracking.run_notes import varied_overrides

    # Hydra hands each job the overrides it re-wrote: `false` -> `False`, `[a,b]` -> `[a, b]`
    sweep = ["enhancer.amount=0.5,1.5", "tracking.sweep_report=false", "protocol.analyses=[by_pose,flip]", "~seed"]
    job = ["enhancer.amount=0.5", "tracking.sweep_report=False", "protocol.analyses=[by_pose, flip]", "~seed"]
    assert varied_overrides(job, sweep) == ["enhancer.amount=0.5"]
    assert varied_overrides(["tracking.sweep_report=True"], sweep) == ["tracking.sweep_report=True"]
    assert varied_overrides(["+extra=1"], ["extra=1"]) == ["+extra=1"]  # adding is not setting
    assert varied_overrides(job, None) == job


def test_sweep_children_are_named_by_what_they_vary_and_described(tmp_path, tmp_path_factory):
    """A real 2-job sweep: each child's name gives the value it varied (not the keys all jobs
    share, `false` among them, which Hydra hands the jobs as `False`), and its description
    gives its Net Gain, 95% CI and N as logged."""
    from tests.conftest import prepare_output_root

    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "frontal_exp", "-m", "enhancer=sharp", "enhancer.amount=0.5,1.5",
         "dataset.limit=2", "eval.bootstrap=20", "eval.grid_samples=2", "protocol.analyses=[]",
         "tracking.sweep_report=false", f"output_root={out_root}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("frontal_exp")
    assert exp.tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT_KIND
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    names = sorted(r.info.run_name for r in children)
    assert names == ["mesh3d+sharp amount=0.5", "mesh3d+sharp amount=1.5"]

    for run in children:
        note, m = run.data.tags[NOTE_TAG], run.data.metrics
        assert f"**Net Gain** {m['net_gain']:+.4f}" in note
        assert f"95% CI [{m['net_gain_ci_low']:+.4f}, {m['net_gain_ci_high']:+.4f}]" in note
        assert f"N = {int(m['n'])} paired" in note
        assert f"win rate {m['win_rate']:.2f}" in note
        assert "`figures/triplets.png`" in note
        assert "figures/triplets.png" in {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    parent = next(r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep")
    assert "enhancer.amount=0.5" in parent.data.tags[NOTE_TAG] and "enhancer.amount=1.5" in parent.data.tags[NOTE_TAG]


@pytest.mark.parametrize(("metrics", "expected", "absent"), [
    ({"net_gain": 0.01, "net_gain_ci_low": -0.02, "net_gain_ci_high": 0.04, "n": 8, "n_items": 10,
      "win_rate": 0.5, "not_paired": 2, "no_face_frontal": 2, "frontalize_failed": 0,
      "fusion_gain": 0.003, "fusion_gain_ci_low": -0.001, "fusion_gain_ci_high": 0.007},
     ["**Net Gain** +0.0100 (95% CI [-0.0200, +0.0400]), N = 8 paired of 10 items, win rate 0.50",
      "**Fusion Gain** +0.0030", "Not paired (2): no face in frontal 2"], ["frontalize failed"]),
    ({"angle_vs_gt": 0.4, "angle_vs_gt_ci_low": 0.3, "angle_vs_gt_ci_high": 0.5, "angle_vs_gt_n": 12,
      "impostor": 0.05, "impostor_n": 30, "margin_angle_vs_gt": 0.35},
     ["**Angled vs GT** +0.4000 (95% CI [+0.3000, +0.5000]), N = 12 pairs", "**Impostor** +0.0500",
      "+0.3500"], ["Net Gain"]),
    ({"original.acc_mean": 0.9, "original.acc_std": 0.01, "original.auc": 0.95, "original.n_scored": 40},
     ["**original**: accuracy 0.9000 ± 0.0100, AUC 0.9500, 40 pairs scored"], ["Net Gain"]),
])
def test_run_note_gives_each_protocols_key_metrics(metrics, expected, absent):
    from frontal_exp.tracking.run_notes import run_note

    note = run_note(metrics, {"embedder": "emb", "dataset": "demo"})
    for text in expected:
        assert text in note
    for text in absent:
        assert text not in note


def test_a_run_prints_where_to_see_it_in_the_ui(make_cfg, tmp_path):
    """The last lines of a run: the run id and store, and for the local store the `mlflow ui`
    command and the page of the runs list (MLflow 3 otherwise opens the GenAI overview)."""
    from frontal_exp.app import mlflow_pointer
    from frontal_exp.tracking.mlflow_logger import default_sqlite_uri

    cfg = make_cfg(output_root=tmp_path)
    uri = default_sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    run = client.create_run(exp).info.run_id
    text = mlflow_pointer(cfg, run)
    assert text.splitlines()[0] == f"MLflow run {run} ({uri})"
    assert f"mlflow ui --backend-store-uri {uri}" in text
    assert text.endswith(f"/#/experiments/{exp}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_ID}")
    remote = make_cfg("tracking.uri=http://127.0.0.1:1", output_root=tmp_path)
    assert mlflow_pointer(remote, run) == f"MLflow run {run} (http://127.0.0.1:1)"


def view_state(client: MlflowClient, experiment_id: str) -> dict:
    envelope = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + VIEW_ID])
    assert envelope["name"] == VIEW_NAME and isinstance(envelope["createdAt"], int)
    return json.loads(envelope["state"])


def test_the_runs_list_view_shows_key_metrics_as_columns(tmp_path):
    """MLflow 3.17's runs list shows no metric column until one is picked; the experiment gets
    a saved view (MLflow's envelope in an experiment tag) selecting each protocol's key
    metrics, a sweep parent's first; columns accumulate and a view the user saved over it
    (MLflow writes its state compressed) is left alone."""
    client = client_for(default_sqlite_uri(tmp_path))
    exp = client.create_experiment("e")
    frontalization = {"net_gain": 0.01, "net_gain_ci_low": -0.02, "net_gain_ci_high": 0.04, "n": 8.0,
                      "win_rate": 0.5, "angle_to_gt": 0.4, "seconds": 3.0}
    assert ensure_metrics_view(client, exp, frontalization)
    state = view_state(client, exp)
    assert state["selectedColumns"] == ["metrics.`net_gain`", "metrics.`net_gain_ci_low`",
                                        "metrics.`net_gain_ci_high`", "metrics.`n`", "metrics.`win_rate`"]
    assert state["columnOrder"] == ["attributes.`Run Name`", "attributes.`Created`", *state["selectedColumns"]]
    assert state["columnWidths"] == {"attributes.`Run Name`": 300}
    assert not ensure_metrics_view(client, exp, frontalization)  # nothing new: the tag is not rewritten
    # a sweep parent's metrics lead; a verification run adds its conditions' accuracy and AUC
    assert ensure_metrics_view(client, exp, {"n_jobs": 2.0, "n_failed": 0.0, "best_net_gain": 0.01})
    assert ensure_metrics_view(client, exp, {"n_pairs": 40.0, "original.acc_mean": 0.9, "original.auc": 0.95,
                                             "original.n_folds": 10.0})
    columns = view_state(client, exp)["selectedColumns"]
    assert columns[:4] == ["metrics.`best_net_gain`", "metrics.`n_jobs`", "metrics.`n_failed`", "metrics.`net_gain`"]
    assert columns[-2:] == ["metrics.`original.acc_mean`", "metrics.`original.auc`"]
    assert "metrics.`original.n_folds`" not in columns and "metrics.`seconds`" not in columns

    users = json.dumps({"name": "mine", "createdAt": 1, "state": "deflate;eJyrVkrOz0lNLlGyUlBKSc1N"})
    client.set_experiment_tag(exp, VIEW_TAG_PREFIX + VIEW_ID, users)
    assert not ensure_metrics_view(client, exp, {"fusion_gain": 0.1})
    assert client.get_experiment(exp).tags[VIEW_TAG_PREFIX + VIEW_ID] == users
