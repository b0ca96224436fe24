"""End to end: `evaluate` on the embedded defaults, and sweeps as real subprocesses,
checked through what MLflow holds afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from frontal_exp.evaluation import evaluate
from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
from tests.conftest import prepare_output_root

REPO = Path(__file__).resolve().parents[1]


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_evaluate_default_config_logs_run(make_cfg, tmp_path, tmp_path_factory):
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    cfg = make_cfg("dataset.limit=6", "eval.bootstrap=200", "eval.grid_samples=3", output_root=out_root)
    result = evaluate(cfg, output_dir=tmp_path / "job")
    m = result.metrics
    assert m["n_items"] == 6
    assert m["n"] + m["not_paired"] == 6
    assert m["net_gain"] == pytest.approx(m["frontal_to_gt"] - m["angle_to_gt"])
    assert m["net_gain_ci_low"] <= m["net_gain"] <= m["net_gain_ci_high"]
    assert (tmp_path / "job" / "items.csv").is_file() and (tmp_path / "job" / "results.json").is_file()

    client = MlflowClient(default_sqlite_uri(out_root))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in ("angle_to_gt", "frontal_to_gt", "net_gain", "n", "win_rate", "net_gain_ci_low",
                "no_face_angle", "no_face_frontal", "no_face_gt", "unreadable_angle"):
        assert key in run.data.metrics, key
    assert run.data.metrics["net_gain"] == pytest.approx(m["net_gain"])
    assert run.data.params["model._target_"].endswith("Mesh3DFrontalizer")
    assert run.data.params["run.enhancer"] == "none"
    arts = artifact_paths(client, result.run_id)
    assert {"config.yaml", "tables/items.json", "tables/skipped.json", "tables/results.json",
            "figures/triplets.png"} <= arts
    items = json.loads(Path(client.download_artifacts(result.run_id, "tables/items.json", str(tmp_path))).read_text())
    assert len(items["data"]) == 6 and "frontal_to_gt" in items["columns"]
    # the artifact store sits under the output root, not wherever the job ran
    assert (out_root / "mlartifacts").is_dir()


def test_demo_mesh3d_keeps_identity_and_loses_no_face(make_cfg, tmp_path):
    """On the demo set, mesh3d outputs stay recognisable (close to the angled input and
    to GT) and frontalization loses no face. (Whether it gains is what runs measure.)"""
    cfg = make_cfg("eval.bootstrap=200", "tracking.enabled=false", output_root=tmp_path / "o")
    result = evaluate(cfg)
    m = result.metrics
    assert m["n"] >= 0.9 * m["n_items"] and m["no_face_frontal"] == 0
    paired = [r for r in result.records if r.paired]
    assert sum(r.frontal_to_angle for r in paired) / len(paired) > 0.7
    assert m["frontal_to_gt"] > 0.4


def run_cli(args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "frontal_exp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_sweep(out_root: Path, n_jobs: int, param: str = "run.enhancer", values: set[str] | None = None) -> list:
    """A finished sweep of `n_jobs` jobs in MLflow and on disk; its jobs' runs, whose `param`
    takes the `values` swept. Every launcher's sweep is checked this way: the basic one's by
    tests/test_gfpgan.py::test_gfpgan_sweep_from_the_command_line."""
    client = MlflowClient(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("frontal_exp")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert len(parents) == 1 and len(children) == n_jobs
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.params[param] for c in children} == (values or {"none", "sharp"})
    for c in children:
        assert c.info.status == "FINISHED" and "net_gain" in c.data.metrics
        assert "figures/triplets.png" in artifact_paths(client, c.info.run_id)
    assert "tables/sweep_summary.json" in artifact_paths(client, parents[0].info.run_id)
    # every job, whatever process ran it, wrote into the folder of the sweep that launched it
    (folder,) = out_root.glob("multirun/*")
    assert sorted(p.parent.name for p in folder.glob("*/results.json")) == [str(i) for i in range(n_jobs)]
    assert parents[0].data.tags["sweep.dir"] == str(folder.resolve())
    assert json.loads((folder / "mlflow_parent.json").read_text())["run_id"] == parents[0].info.run_id
    # the jobs measured the same items, so their angle_to_gt_all (angle vs GT over every item,
    # whether or not its frontal has a face) agree exactly
    assert len({(c.data.metrics["n_items"], round(c.data.metrics["angle_to_gt_all"], 9)) for c in children}) == 1
    return children


def check_summary(stdout: str, *overrides: str) -> None:
    """The sweep's summary table, printed at its end, has a row per job and the net gain."""
    assert "Sweep summary" in stdout
    summary = stdout.split("Sweep summary")[1]
    assert all(o in summary for o in overrides) and "net_gain" in summary


#: a sweep that costs seconds (no frontalization model, two items, few bootstrap draws); the
#: launchers are what these tests check
SWEEP_ARGS = ["-m", "enhancer=none,sharp", "model=identity", "dataset.limit=2", "eval.bootstrap=20",
              "eval.grid_samples=1", "protocol.analyses=[]"]


def test_parallel_sweep_with_joblib_launcher(tmp_path, tmp_path_factory):
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = run_cli([*SWEEP_ARGS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"output_root={out_root}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr
    check_summary(proc.stdout, "enhancer=none", "enhancer=sharp")
    check_sweep(out_root, 2)


def test_sweep_jobs_as_submitit_processes(tmp_path, tmp_path_factory):
    """The cluster path: jobs pickled and run by submitit in their own processes (the
    `submitit_local` launcher stands in for `submitit_slurm`), finding their parent run
    through the sweep folder."""
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = run_cli([*SWEEP_ARGS, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                    f"output_root={out_root}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Submitit 'local' sweep" in proc.stdout + proc.stderr
    check_sweep(out_root, 2)
    # each job ran in a submitit process, which leaves its own logs in the job folder
    assert len(list(out_root.glob("multirun/*/.submitit/*/*_result.pkl"))) == 2


def test_cli_reports_config_errors_clearly(tmp_path):
    proc = run_cli(["dataset=folder", f"output_root={tmp_path}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "dataset.root must be set" in proc.stderr + proc.stdout


def test_config_dir_can_be_moved_and_a_missing_one_is_named(tmp_path):
    import shutil

    from frontal_exp.app import CONFIG_DIR

    conf = tmp_path / "myconf"
    shutil.copytree(CONFIG_DIR, conf)
    text = (conf / "config.yaml").read_text()
    (conf / "config.yaml").write_text(text.replace("\nseed: 0\n", "\nseed: 7\n"))
    proc = run_cli(["--cfg", "job"], cwd=tmp_path, env_extra={"FRONTAL_EXP_CONF": str(conf)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\nseed: 7\n" in proc.stdout

    proc = run_cli([], cwd=tmp_path, env_extra={"FRONTAL_EXP_CONF": str(tmp_path / "nowhere")})
    assert proc.returncode != 0
    assert f"no frontal_exp configs at {tmp_path / 'nowhere'}" in proc.stderr
