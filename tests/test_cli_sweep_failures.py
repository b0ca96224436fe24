"""A sweep whose job fails (issue 9): each failed job printed with what it varied and why, the
summary of the jobs that finished, exit status 1, no traceback, the parent run FAILED and
tagged with every failed job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
from frontal_exp.tracking.run_notes import VIEW_ID, VIEW_TAG_PREFIX


def test_a_sweep_with_failed_jobs_ends_with_the_finished_jobs_and_the_failed_list(tmp_path, tmp_path_factory):
    """Four jobs: (demo, amount 1.0) finishes; (demo, -1.0) fails building its enhancer, (biwi,
    1.0) in the dataset loader (no root), (biwi, -1.0) in one or the other."""
    from tests.conftest import prepare_output_root

    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    env = {k: v for k, v in os.environ.items()
           if k not in ("BIWI_ROOT", "MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR", "FRONTAL_EXP_VERBOSE")}
    proc = subprocess.run(
        [sys.executable, "-m", "frontal_exp", "-m", "model=identity", "dataset=demo,biwi", "enhancer=sharp",
         "enhancer.amount=1.0,-1.0", "dataset.limit=2", "eval.bootstrap=20", "eval.grid_samples=2",
         "protocol.analyses=[]", "tracking.sweep_report=false", f"output_root={out_root}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    # each failed job: what it varied (not the overrides every job shares) and the one-line reason
    assert "Sweep FAILED (3 jobs failed, 1 finished):" in proc.stderr
    assert ("  job 1 failed: dataset=demo enhancer.amount=-1.0: ConfigError: sharp: amount must be >= 0"
            in proc.stderr), proc.stderr[-3000:]
    assert ("  job 2 failed: dataset=biwi enhancer.amount=1.0: DatasetError: no dataset root given; set BIWI_ROOT="
            in proc.stderr), proc.stderr[-3000:]
    assert "  job 3 failed: dataset=biwi enhancer.amount=-1.0: " in proc.stderr
    # the summary of the job that finished
    summary = proc.stdout.split("Sweep summary")[1].splitlines()
    header = summary[1].split()
    assert header[:2] == ["job", "overrides"] and "net_gain" in header
    tokens = summary[2].split()  # the overrides column holds two overrides
    row = dict(zip(header, [tokens[0], " ".join(tokens[1:3]), *tokens[3:]], strict=True))
    assert row["job"] == "0" and row["overrides"] == "dataset=demo enhancer.amount=1.0"
    assert row["model"] == "identity" and row["n"] == "2"
    assert not summary[3].strip(), summary  # one row: the failed jobs have none

    client = MlflowClient(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("frontal_exp")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep")
    assert parent.info.status == "FAILED"
    # every failed job is named, with its overrides and reason (not only the last one)
    tags = parent.data.tags
    assert tags["sweep.failed_jobs"] == "1,2,3"
    assert tags["sweep.failed_job.1"].startswith("model=identity dataset=demo enhancer=sharp enhancer.amount=-1.0 ")
    assert ": ConfigError: sharp: amount must be >= 0" in tags["sweep.failed_job.1"]
    assert "dataset=biwi" in tags["sweep.failed_job.2"]
    assert "DatasetError: no dataset root given" in tags["sweep.failed_job.2"]
    assert "dataset=biwi" in tags["sweep.failed_job.3"] and "enhancer.amount=-1.0" in tags["sweep.failed_job.3"]
    # the job that ran is kept, and the runs list's collapsed parent row shows the sweep at a glance
    [child] = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert child.info.status == "FINISHED" and child.data.params["enhancer.amount"] == "1.0"
    assert child.info.run_name == "identity+sharp dataset=demo amount=1.0", child.info.run_name
    assert parent.data.metrics == {"n_jobs": 4.0, "n_failed": 3.0, "best_net_gain": child.data.metrics["net_gain"]}
    assert child.data.metrics["n"] == 2 and float(row["net_gain"]) == pytest.approx(child.data.metrics["net_gain"], abs=1e-4)
    assert "sweep_summary.txt" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    # the experiment's saved view shows the parent's and the job's metrics as columns
    view = json.loads(json.loads(exp.tags[VIEW_TAG_PREFIX + VIEW_ID])["state"])
    assert {"metrics.`best_net_gain`", "metrics.`n_failed`", "metrics.`net_gain`"} <= set(view["selectedColumns"])
