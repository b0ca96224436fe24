"""Runs and sweeps as real processes: a folder of their own per invocation, one schema
creation per database, tracking failures that fail the sweep, runs left RUNNING by killed
processes, Ctrl-C, and model files checked before any data is loaded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow import MlflowClient

from frontal_exp.errors import MissingWeightsError
from frontal_exp.tracking.mlflow_logger import default_sqlite_uri
from tests.conftest import mlflow_db, prepare_output_root

REPO = Path(__file__).resolve().parents[1]
#: a sweep that costs seconds: no frontalization model, two items, no figures
FAST = ["model=identity", "dataset.limit=2", "eval.bootstrap=20", "protocol.analyses=[]",
        "tracking.log_images=false"]


def start_cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """`python -m frontal_exp <args>` with the test patches of tests/patched_cli.py."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "patched_cli.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before reaching the slow item:\n{proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "the run did not reach the slow item"
        time.sleep(0.2)


def experiment_runs(out_root: Path):
    client = MlflowClient(default_sqlite_uri(out_root))
    exp = client.get_experiment_by_name("frontal_exp")
    return client, client.search_runs([exp.experiment_id])


def test_two_sweeps_started_in_the_same_second_stay_apart(tmp_path, tmp_path_factory):
    """Two sweeps on a fresh database, whose clocks read the same second: each gets its own
    folder, its own parent run with its own two jobs, and both parents finish."""
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory, with_db=False)
    same_second = {"FRONTAL_EXP_TEST_NOW": "2024-01-01 12:00:00"}
    procs = [start_cli(["-m", "enhancer=none,sharp", f"seed={seed}", *FAST, f"output_root={out_root}"], tmp_path,
                       **same_second) for seed in (1, 2)]
    for proc in procs:
        rc, out, err = finish(proc)
        assert rc == 0, err[-3000:]
        assert "duplicate column" not in err and "Traceback" not in err

    folders = sorted(out_root.glob("multirun/*"))
    assert len(folders) == 2 and all(f.name.startswith("2024-01-01_12-00-00_") for f in folders)
    for folder in folders:  # every job wrote into its own sweep's folder
        assert sorted(p.parent.name for p in folder.glob("*/results.json")) == ["0", "1"]

    client, runs = experiment_runs(out_root)
    parents = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert len(parents) == 2 and len(jobs) == 4
    assert len({p.data.tags["frontal_exp.pid"] for p in parents}) == 2  # each names the process that ran it
    for parent in parents:
        assert parent.info.status == "FINISHED"
        seed = parent.data.tags["sweep.overrides"].split("seed=")[1].split()[0]
        children = [j for j in jobs if j.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.data.params["run.enhancer"] for c in children) == ["none", "sharp"]
        assert {c.data.params["seed"] for c in children} == {seed}
        assert Path(parent.data.tags["sweep.dir"]).parent == out_root.resolve() / "multirun"


@pytest.mark.parametrize(("failure", "message"), [
    ("create_parent", "while creating the sweep's parent run"),
    ("close_parent", "while closing the sweep's parent run"),
])
def test_a_tracking_error_in_the_sweep_callback_fails_the_sweep(tmp_path, tmp_path_factory, failure, message):
    """Hydra turns callback exceptions into warnings; the sweep must exit non-zero instead."""
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = start_cli(["-m", "enhancer=none", *FAST, "dataset.limit=1", f"output_root={out_root}"], tmp_path,
                     FRONTAL_EXP_TEST_FAIL=failure)
    rc, out, err = finish(proc)
    assert rc != 0
    assert f"MLflow tracking failed {message}" in err and "test: the tracking store refused" in err
    ran = list(out_root.glob("multirun/*/0/results.json"))
    assert len(ran) == (0 if failure == "create_parent" else 1)  # no job runs without its parent


def test_runs_of_dead_processes_are_marked_killed(tmp_path, tmp_path_factory):
    """RUNNING runs of this host whose process is gone become KILLED; live processes, other
    hosts and finished runs are left alone."""
    from frontal_exp.tracking.mlflow_logger import (
        HOST_TAG,
        PID_START_TAG,
        PID_TAG,
        mark_dead_runs,
        process_tags,
    )

    mlflow_db(tmp_path / "mlflow.db", tmp_path_factory)  # the schema made
    client = MlflowClient(default_sqlite_uri(tmp_path))
    exp = client.create_experiment("e")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, host = gone.stdout.strip(), socket.gethostname()

    def run_with(pid: str, on_host: str, finished: bool = False, started: str = "") -> str:
        run = client.create_run(exp, tags={HOST_TAG: on_host, PID_TAG: pid, PID_START_TAG: started})
        if finished:
            client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    dead = run_with(dead_pid, host)
    alive = run_with(str(os.getpid()), host)
    elsewhere = run_with(dead_pid, host + "-other-node")
    done = run_with(dead_pid, host, finished=True)
    me = process_tags()
    assert me[PID_START_TAG].isdigit()  # Linux: the start time tells a reused pid apart
    this_process = run_with(str(os.getpid()), host, started=me[PID_START_TAG])
    # a run of an earlier process that had this process's pid (a reused pid) is dead
    reused = run_with(str(os.getpid()), host, started=str(int(me[PID_START_TAG]) - 1))
    assert sorted(mark_dead_runs(client, exp)) == sorted([dead, reused])
    runs = (dead, alive, elsewhere, done, this_process, reused)
    status = {r: client.get_run(r).info.status for r in runs}
    assert status == {dead: "KILLED", alive: "RUNNING", elsewhere: "RUNNING", done: "FINISHED",
                      this_process: "RUNNING", reused: "KILLED"}


def test_a_sweep_killed_with_sigkill_is_marked_killed_by_the_next_start(tmp_path, tmp_path_factory):
    from frontal_exp.tracking.mlflow_logger import HOST_TAG, PID_TAG

    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    marker = tmp_path / "slow_item_reached"
    proc = start_cli(["-m", "enhancer=none", *FAST, "dataset.limit=3", "eval.batch_size=1",
                      f"output_root={out_root}"], tmp_path, FRONTAL_EXP_TEST_SLOW=str(marker))
    wait_for(marker, proc)
    proc.kill()
    proc.wait(timeout=30)
    client, runs = experiment_runs(out_root)
    (parent,) = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep"]
    assert parent.info.status == "RUNNING"
    assert parent.data.tags[PID_TAG] == str(proc.pid) and parent.data.tags[HOST_TAG] == socket.gethostname()

    rc, out, err = finish(start_cli([*FAST, "dataset.limit=1", f"output_root={out_root}"], tmp_path))
    assert rc == 0, err[-3000:]
    assert client.get_run(parent.info.run_id).info.status == "KILLED"
    _, runs = experiment_runs(out_root)
    (job,) = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert job.info.status == "FINISHED" and job.data.tags[PID_TAG] != str(proc.pid)


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, tmp_path_factory):
    """SIGINT after the first item (batch_size=1): the items done are counted, no traceback."""
    marker = tmp_path / "slow_item_reached"
    out_root = prepare_output_root(tmp_path / "outputs", tmp_path_factory)
    proc = start_cli([*FAST, "dataset.limit=3", "eval.batch_size=1", f"output_root={out_root}"],
                     tmp_path, FRONTAL_EXP_TEST_SLOW=str(marker))
    wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    rc, out, err = finish(proc, timeout=60)
    assert rc == 130
    assert "Traceback" not in err + out
    assert err.strip().splitlines()[-1] == "interrupted; 1 item done is cached, re-run to resume"


def blank_people(root: Path, people: int = 4, photos: int = 2) -> Path:
    for i in range(people):
        (root / f"person{i}").mkdir(parents=True)
        for j in range(photos):
            cv2.imwrite(str(root / f"person{i}" / f"{j}.png"), np.full((32, 32, 3), 40 * j, np.uint8))
    return root


@pytest.mark.parametrize("setup", [
    ["protocol=frontalization", "model=liveportrait"],
    ["protocol=verification", "model=liveportrait"],
    ["protocol=robustness", "embedder=scrfd_r50"],
])
def test_model_files_are_checked_before_the_dataset_loads(make_cfg, tmp_path, monkeypatch, setup):
    """A missing model file stops the run before a single head pose is estimated."""
    from frontal_exp.data import poses
    from frontal_exp.evaluation import evaluate

    def no_pose_yet(*args, **kwargs):
        raise AssertionError("the dataset was loaded (poses estimated) before the model files were checked")

    monkeypatch.setattr(poses, "estimate_poses", no_pose_yet)
    (tmp_path / "no_models").mkdir()
    cfg = make_cfg("dataset=folder", f"dataset.root={blank_people(tmp_path / 'people')}", *setup,
                   f"models_dir={tmp_path / 'no_models'}", "tracking.enabled=false")
    with pytest.raises(MissingWeightsError):
        evaluate(cfg)


def test_the_interrupt_line_says_what_is_kept():
    from frontal_exp.app import interrupt_message
    from frontal_exp.errors import RunInterrupted

    assert interrupt_message(RunInterrupted(3)) == "interrupted; 3 items done are cached, re-run to resume"
    assert interrupt_message(KeyboardInterrupt()).startswith("interrupted; the work done so far is cached")
    # a run without a cache keeps nothing: never promise a resume
    assert interrupt_message(RunInterrupted(3), use_cache=False) == "interrupted; nothing is kept (eval.use_cache=false)"


def test_the_schema_is_created_under_the_lock(tmp_path):
    """While another process holds `<db>.lock` (creating the schema), a new client waits
    instead of racing it; once the lock is free it opens the database."""
    import sqlite3
    import threading

    from filelock import FileLock

    from frontal_exp.tracking.mlflow_logger import client_for

    db = tmp_path / "mlflow.db"
    opened = threading.Event()
    with FileLock(f"{db}.lock"):
        worker = threading.Thread(target=lambda: (client_for(f"sqlite:///{db}"), opened.set()))
        worker.start()
        assert not opened.wait(1.5)  # blocked by the lock: no schema made behind its back
        assert not db.exists() or sqlite3.connect(db).execute("select count(*) from sqlite_master").fetchone()[0] == 0
    assert opened.wait(60)
    worker.join()
    assert sqlite3.connect(db).execute("select count(*) from sqlite_master").fetchone()[0] > 0
