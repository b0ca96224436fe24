"""A sweep whose job fails (issue 9): each failed job printed with what it varied and why, the
summary of the jobs that finished, exit status 1, no traceback, the parent run FAILED and
tagged with every failed job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlflow import MlflowClient

from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
from frontal_exp.tracking.run_notes import VIEW_ID, VIEW_TAG_PREFIX


def test_a_sweep_with_a_failed_job_ends_with_the_finished_jobs_and_the_failed_list(tmp_path, tmp_path_factory):
    """Job 0 (demo set) finishes; job 1 (BIWI without a root) fails in the dataset loader."""
    out_root = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items()
           if k not in ("BIWI_ROOT", "MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR", "FRONTAL_EXP_VERBOSE")}
    cache = tmp_path_factory.getbasetemp() / "shared_cache"  # the demo set of the session (test_protocols)
    proc = subprocess.run(
        [sys.executable, "-m", "frontal_exp", "-m", "model=identity", "dataset=demo,biwi", "dataset.limit=2",
         "eval.bootstrap=20", "eval.grid_samples=2", "protocol.analyses=[]", f"cache_dir={cache}",
         f"output_root={out_root}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out
    # the failed job: what it varied (not the overrides every job shares) and the one-line reason
    assert "Sweep FAILED (1 job failed, 1 finished):" in proc.stderr
    assert "  job 1 failed: dataset=biwi: DatasetError: no dataset root given; set BIWI_ROOT=" in proc.stderr
    # the summary of the job that finished
    summary = proc.stdout.split("Sweep summary")[1].splitlines()
    header = summary[1].split()
    assert header[:2] == ["job", "overrides"] and "net_gain" in header
    row = dict(zip(header, summary[2].split(), strict=True))
    assert row["job"] == "0" and row["overrides"] == "dataset=demo" and row["model"] == "identity"
    assert float(row["net_gain"]) == 0.0 and row["n"] == "2"

    client = MlflowClient(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("frontal_exp")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["sweep.failed_jobs"] == "1"
    assert "dataset=biwi" in parent.data.tags["sweep.failed_job.1"]
    assert "DatasetError: no dataset root given" in parent.data.tags["sweep.failed_job.1"]
    # the runs list's collapsed parent row shows the sweep at a glance
    assert parent.data.metrics == {"n_jobs": 2.0, "n_failed": 1.0, "best_net_gain": 0.0}
    assert "sweep_summary.txt" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    [child] = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert child.info.status == "FINISHED" and child.info.run_name == "identity dataset=demo"
    # the experiment's saved view shows the parent's and the job's metrics as columns
    view = json.loads(json.loads(exp.tags[VIEW_TAG_PREFIX + VIEW_ID])["state"])
    assert {"metrics.`best_net_gain`", "metrics.`n_failed`", "metrics.`net_gain`"} <= set(view["selectedColumns"])
