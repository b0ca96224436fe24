"""A team's tracking server, for real: PostgreSQL on a loopback port (the binaries of the
`pgserver` wheel), `mlflow server` on it serving a shared artifact folder, a 2-job parallel
sweep logged through it, and a server restart in the middle of a run's logging: the run that
retries loses nothing, the run that gives up fails loudly, keeps its results on disk and is
logged later by the command it prints.

Deselect with `-m "not team_server"`."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from frontal_exp.tracking.mlflow_logger import (
    PENDING_FILE,
    TrackingError,
    retry_policy,
    retry_wait_seconds,
    start_tracking,
)
from frontal_exp.tracking.relog import RELOGGED_AS_TAG, RELOGGED_FILE, RELOGGED_FROM_TAG
from tests.conftest import prepare_output_root

REPO = Path(__file__).resolve().parents[1]
#: the folder of the `sitecustomize` that pauses a run before it logs (FRONTAL_EXP_TEST_PAUSE)
PAUSE_HOOK = REPO / "tests" / "pause_hook"
#: a run that costs seconds: two items, few bootstrap draws, no extra analyses (figures kept:
#: the test downloads them)
FAST = ["dataset.limit=2", "eval.bootstrap=20", "protocol.analyses=[]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    spec = find_spec("pgserver")
    if spec is None:
        pytest.fail("pgserver is not installed (it ships PostgreSQL's binaries): pip install -e '.[dev]'")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


class Postgres:
    """A PostgreSQL server on 127.0.0.1:<free port>, data in `root`, with a `mlflow` database,
    as a team runs it (TCP, no Unix socket). PostgreSQL refuses to run as root: under root it
    runs as `nobody`, which owns `root`."""

    def __init__(self, root: Path) -> None:
        self.root, self.port, self.proc = root, free_port(), None
        self.user = "nobody" if os.geteuid() == 0 else None
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/mlflow"

    def start(self) -> None:
        import psycopg

        data = self.root / "data"
        if self.user:
            shutil.chown(self.root, self.user)
        initdb = subprocess.run([pg_bin() / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                 "--no-sync"], user=self.user, capture_output=True, text=True)
        assert initdb.returncode == 0, f"initdb failed (user {self.user}):\n{initdb.stderr[-2000:]}"
        with open(self.root / "postgres.log", "w") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [pg_bin() / "postgres", "-D", data, "-h", "127.0.0.1", "-p", str(self.port), "-c", "fsync=off",
                 "-c", "unix_socket_directories="], user=self.user, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                     autocommit=True) as conn:
                    conn.execute("CREATE DATABASE mlflow")
                return
            except psycopg.OperationalError:
                assert self.proc.poll() is None, (self.root / "postgres.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "PostgreSQL did not start in 60 s"
                time.sleep(0.2)

    def query(self, sql: str, *args: object) -> list[tuple]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="mlflow") as conn:
            return conn.execute(sql, args).fetchall()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: does not wait for clients
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class MlflowServer:
    """`mlflow server` on a PostgreSQL backend store, serving the artifacts of the runs from a
    folder (`--artifacts-destination`), on 127.0.0.1:<port>; stopped and started again on the
    same port and store to restart it."""

    def __init__(self, backend: str, artifacts: Path, log_dir: Path) -> None:
        self.backend, self.artifacts, self.log_dir = backend, artifacts, log_dir
        self.port, self.proc, self.starts = free_port(), None, 0
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 240) -> None:
        self.starts += 1
        log = self.log_dir / f"mlflow_server_{self.starts}.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [Path(sys.executable).parent / "mlflow", "server", "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server did not answer in {timeout} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM to the server's process group (the CLI and its uvicorn worker), then SIGKILL."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind by its parent
        self.proc = None


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL + `mlflow server` for this module's tests; both stopped at its end."""
    # PostgreSQL's folder in /tmp itself: pytest's folders are private to root, `nobody` must
    # reach its data folder
    pg_root = Path(tempfile.mkdtemp(prefix="frontal_exp_pg_"))
    work = tmp_path_factory.mktemp("team")
    (work / "artifacts").mkdir()
    postgres = Postgres(pg_root)
    server = None
    try:
        t0 = time.monotonic()
        postgres.start()
        server = MlflowServer(postgres.uri, work / "artifacts", work)
        server.start()
        print(f"\nPostgreSQL + mlflow server up in {time.monotonic() - t0:.1f} s")
        yield SimpleNamespace(postgres=postgres, server=server, work=work)
    finally:
        if server is not None:
            server.stop()
        postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


def start_cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """`python -m frontal_exp <args>`, pausing before it logs (tests/pause_hook) when
    FRONTAL_EXP_TEST_PAUSE is given."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PAUSE_HOOK), env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "frontal_exp", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> SimpleNamespace:
    out, err = proc.communicate(timeout=timeout)
    return SimpleNamespace(rc=proc.returncode, out=out, err=err)


def runs_of(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} on the server"
    return client.search_runs([exp.experiment_id])


def check_logged(client: MlflowClient, run, run_dir: Path, dst: Path) -> None:  # noqa: ANN001 - an MLflow Run
    """A run on the server holds what its folder holds: metrics, the items table, figures."""
    local = json.loads((run_dir / "results.json").read_text())
    for key in ("net_gain", "n", "angle_to_gt", "frontal_to_gt"):
        assert run.data.metrics[key] == pytest.approx(local["metrics"][key], nan_ok=True), key
    assert run.data.params["run.model"] == local["params"]["model"]
    dst.mkdir(parents=True, exist_ok=True)
    items = pd.read_csv(client.download_artifacts(run.info.run_id, "tables/items.csv", str(dst)))
    pd.testing.assert_frame_equal(items, pd.read_csv(run_dir / "items.csv"))
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/triplets.png" in figures, figures
    image = cv2.imread(client.download_artifacts(run.info.run_id, "figures/triplets.png", str(dst)))
    assert image is not None and image.shape == cv2.imread(str(run_dir / "triplets.png")).shape


def wait_paused(folder: Path, count: int, procs: list[subprocess.Popen], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("paused.*"))) < count:
        for proc in procs:
            assert proc.poll() is None, f"a run ended before it logged:\n{proc.stdout.read()[-3000:]}{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"the runs did not reach their logging in {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def outage(team, tmp_path_factory):
    """A 2-job parallel sweep (joblib) and a single run, logging to the team server, which is
    stopped once all three have their results on disk and are about to log, and started again
    on the same port and store (a restart):

    - the sweep's jobs retry (MLflow's HTTP retries; backoff factor 1 instead of 2 to keep the
      test short) and log once the server is back;
    - the single run has no retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so it gives up while
      the server is down."""
    root = tmp_path_factory.mktemp("outage")
    pause_sweep, pause_single = root / "pause_sweep", root / "pause_single"
    pause_sweep.mkdir(), pause_single.mkdir()
    common = [*FAST, f"tracking.uri={team.server.url}"]
    for out in ("sweep", "single"):  # the demo set built once for the test run, linked in
        prepare_output_root(root / out, tmp_path_factory, with_db=False)
    t0 = time.monotonic()
    sweep = start_cli(["-m", "model=identity,mesh3d", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *common,
                       "tracking.experiment=team_sweep", f"output_root={root / 'sweep'}"], root,
                      FRONTAL_EXP_TEST_PAUSE=str(pause_sweep), MLFLOW_HTTP_REQUEST_MAX_RETRIES="10",
                      MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    single = start_cli(["model=identity", *common, "tracking.experiment=team_single", f"output_root={root / 'single'}"],
                       root, FRONTAL_EXP_TEST_PAUSE=str(pause_single), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    wait_paused(pause_sweep, 2, [sweep, single])
    wait_paused(pause_single, 1, [sweep, single])
    stopped = time.time()
    team.server.stop()
    (pause_sweep / "resume").touch(), (pause_single / "resume").touch()
    single_done = finish(single, timeout=120)  # it gives up while the server is down
    team.server.start()
    restarted = time.time()
    sweep_done = finish(sweep)
    print(f"\nsweep + single run: {time.monotonic() - t0:.1f} s, the server down for {restarted - stopped:.1f} s")
    return SimpleNamespace(sweep=sweep_done, single=single_done, root=root, stopped=stopped, restarted=restarted)


def sweep_runs(client: MlflowClient) -> tuple:
    """The sweep's parent run and its two jobs (not runs a test relogged since)."""
    runs = [r for r in runs_of(client, "team_sweep") if RELOGGED_FROM_TAG not in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("frontal_exp.kind") == "job"]
    assert len(parents) == 1 and len(jobs) == 2, [r.data.tags for r in runs]
    return parents[0], jobs


def job_dirs(parent) -> dict[str, Path]:
    """A sweep's job folders by model."""
    folders = [d for d in Path(parent.data.tags["sweep.dir"]).iterdir() if (d / "results.json").is_file()]
    return {json.loads((d / "results.json").read_text())["params"]["model"]: d for d in folders}


@pytest.mark.team_server
def test_a_parallel_sweep_logs_parent_children_metrics_and_artifacts(team, outage, tmp_path):
    assert outage.sweep.rc == 0, outage.sweep.out[-3000:] + outage.sweep.err[-3000:]
    client = MlflowClient(team.server.url)
    parent, jobs = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert all(j.data.tags.get("mlflow.parentRunId") == parent.info.run_id for j in jobs)
    assert all(j.info.status == "FINISHED" for j in jobs)
    assert {j.data.params["run.model"] for j in jobs} == {"identity", "mesh3d"}
    folders = job_dirs(parent)
    for job in jobs:
        check_logged(client, job, folders[job.data.params["run.model"]], tmp_path / job.info.run_id)
    assert "tables/sweep_summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}

    # served through the server (mlflow-artifacts:/) from its artifact folder; the runs are
    # rows of the PostgreSQL database
    assert all(j.info.artifact_uri.startswith("mlflow-artifacts:/") for j in jobs)
    for job in jobs:
        assert list(team.server.artifacts.rglob(f"{job.info.run_id}/artifacts/tables/items.csv"))
    ids = [parent.info.run_id] + [j.info.run_id for j in jobs]
    (count,), = team.postgres.query("SELECT count(*) FROM runs WHERE run_uuid = ANY(%s)", ids)
    (gains,), = team.postgres.query("SELECT count(*) FROM latest_metrics WHERE key = 'net_gain' AND run_uuid = ANY(%s)", ids)
    assert (count, gains) == (3, 2)


@pytest.mark.team_server
def test_the_sweep_rides_out_a_server_restart(team, outage):
    """The parent run was created before the restart, its jobs were logged after it, by
    retrying while the server was down: nothing is lost."""
    assert outage.sweep.rc == 0
    client = MlflowClient(team.server.url)
    parent, jobs = sweep_runs(client)
    assert parent.info.start_time / 1000 < outage.stopped
    assert all(j.info.start_time / 1000 > outage.restarted for j in jobs)
    for folder in job_dirs(parent).values():
        log = (folder / "app.log").read_text()
        assert "Retrying" in log and "Connection refused" in log  # urllib3 (MLflow's HTTP client)
        assert not (folder / PENDING_FILE).exists()


@pytest.mark.team_server
def test_a_run_that_gives_up_keeps_its_results_and_is_logged_later(team, outage, tmp_path, capsys):
    single = outage.single
    text = single.out + single.err
    assert single.rc == 2, text[-3000:]
    assert "TrackingError" in text and "did not answer" in text and "Connection refused" in text
    assert "Traceback" not in text
    (run_dir,) = [p.parent for p in (outage.root / "single").glob("runs/*/results.json")]
    pending = json.loads((run_dir / PENDING_FILE).read_text())
    assert pending["tracking_uri"] == team.server.url and pending["experiment"] == "team_single"
    assert pending["partial_run_id"] is None  # the server was down before the run was created
    command = text.split("log them with:", 1)[1].strip().splitlines()[0]
    assert command.split()[1:3] == ["-m", "frontal_exp.tracking.relog"]

    # the printed command, with the server back
    relog = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300)
    assert relog.returncode == 0, relog.stderr[-3000:]
    client = MlflowClient(team.server.url)
    (run,) = runs_of(client, "team_single")
    assert run.info.run_id in relog.stdout
    assert run.info.status == "FINISHED" and run.data.tags[RELOGGED_FROM_TAG] == str(run_dir)
    check_logged(client, run, run_dir, tmp_path)
    # the name and config hash the run would have had: those of the sweep's identity job,
    # whose config differs only in settings left out of the hash (output_root, tracking.*)
    _, jobs = sweep_runs(client)
    (twin,) = [j for j in jobs if j.data.params["run.model"] == "identity"]
    assert run.data.tags["frontal_exp.config_hash"] == twin.data.tags["frontal_exp.config_hash"]
    assert run.info.run_name == "identity | scrfd500m_mbf | demo"
    assert not (run_dir / PENDING_FILE).exists()
    assert json.loads((run_dir / RELOGGED_FILE).read_text())["run_id"] == run.info.run_id

    # the same command again is refused (its main(), here, with the command's arguments)
    from frontal_exp.tracking.relog import main as relog_main

    assert relog_main(shlex.split(command)[3:]) == 1
    assert "logged already" in capsys.readouterr().err
    assert len(runs_of(client, "team_single")) == 1


@pytest.mark.team_server
def test_relog_replaces_a_partial_run_and_finds_the_sweep_parent(team, outage):
    """A sweep job whose logging broke off after its run was created: relog logs the folder
    under the sweep's parent, with the job's name, and deletes the partial run."""
    from frontal_exp.tracking.relog import relog

    client = MlflowClient(team.server.url)
    parent, jobs = sweep_runs(client)
    (job,) = [j for j in jobs if j.data.params["run.model"] == "identity"]
    job_dir = job_dirs(parent)["identity"]
    partial = client.create_run(parent.info.experiment_id, run_name="partial")
    (job_dir / PENDING_FILE).write_text(json.dumps({"partial_run_id": partial.info.run_id}))

    run_id = relog(job_dir)
    new = client.get_run(run_id)
    assert new.data.tags["mlflow.parentRunId"] == parent.info.run_id  # from the sweep's folder
    assert new.info.run_name == job.info.run_name
    assert new.data.tags["frontal_exp.config_hash"] == job.data.tags["frontal_exp.config_hash"]
    assert new.data.metrics["net_gain"] == job.data.metrics["net_gain"]
    gone = client.get_run(partial.info.run_id)
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags[RELOGGED_AS_TAG] == run_id


@pytest.mark.team_server
def test_a_run_in_this_process_logs_to_the_server_and_nothing_locally(team, make_cfg, tmp_path):
    """An evaluation started in Python (as from a notebook) with `tracking.uri` set to the
    server logs there, artifacts included, and nothing goes to the local store."""
    from frontal_exp.evaluation import evaluate
    from tests.test_end_to_end import artifact_paths

    cfg = make_cfg("dataset.limit=3", "eval.bootstrap=50", f"tracking.uri={team.server.url}",
                   "tracking.experiment=remote")
    result = evaluate(cfg)
    client = MlflowClient(team.server.url)
    run = client.get_run(result.run_id)
    assert run.data.metrics["n_items"] == 3
    assert "figures/triplets.png" in artifact_paths(client, result.run_id)
    assert list(team.server.artifacts.rglob(f"{result.run_id}/artifacts/figures/triplets.png"))
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the local store


def test_a_dead_server_at_the_start_fails_before_any_work(make_cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = make_cfg(f"tracking.uri=http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(TrackingError, match="did not answer within 0 retries.*Nothing was run"):
        start_tracking(cfg)


def test_the_retry_window_is_what_urllib3_waits(monkeypatch):
    # MLflow's defaults: 7 retries, backoff factor 2: 0 + 4 + 8 + 16 + 32 + 64 + 120 (capped)
    assert retry_wait_seconds(7, 2) == 244
    assert retry_wait_seconds(0, 2) == retry_wait_seconds(1, 2) == 0
    assert retry_wait_seconds(10, 1) == 0 + 2 + 4 + 8 + 16 + 32 + 64 + 120 + 120 + 120
    from urllib3.util import Retry

    retry = Retry(total=7, backoff_factor=2)  # the waits urllib3 itself computes, summed
    waits = []
    for _ in range(7):
        retry = retry.increment(method="GET", url="/", error=ConnectionError())
        waits.append(retry.get_backoff_time())
    assert sum(waits) == retry_wait_seconds(7, 2)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    assert "7 retries over about 244 s" in retry_policy()  # what a run says when it gives up


def test_a_run_folder_reads_back_as_the_run_had_it(tmp_path):
    """relog reads a run's figures as the run had them (BGR, so MLflow gets the same colours),
    its tables, and the config it hashed: a value that was an interpolation of an ignored
    setting in Hydra's config (`${eval.batch_size}`) stays out of the hash, as in the run."""
    from frontal_exp.tracking.relog import load_run

    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    cv2.imwrite(str(tmp_path / "triplets.png"), image)
    (tmp_path / "results.json").write_text(json.dumps({"params": {"model": "identity"}, "metrics": {"n": 2}}))
    (tmp_path / "config_resolved.yaml").write_text(
        "eval:\n  batch_size: 32\nembedder:\n  batch_size: 32\n  name: mbf\ntracking:\n  uri: null\n")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "eval:\n  batch_size: 32\nembedder:\n  batch_size: ${eval.batch_size}\n  name: mbf\ntracking:\n  uri: null\n")
    pd.DataFrame({"a": [1, 2]}).to_csv(tmp_path / "items.csv", index=False)
    (tmp_path / "skipped.csv").write_text("")
    cfg, result, canonical = load_run(tmp_path)
    assert np.array_equal(result.figures["triplets"], image)
    assert list(result.tables["items"]["a"]) == [1, 2] and result.tables["skipped"].empty
    assert result.metrics == {"n": 2} and result.output_dir == tmp_path
    assert canonical == {"eval": {}, "embedder": {"name": "mbf"}}
    assert cfg.embedder.batch_size == 32


def test_a_refused_log_keeps_the_run_and_relog_replaces_its_partial_run(make_cfg, tmp_path, tmp_path_factory,
                                                                       monkeypatch):
    """A store that answers but refuses a request halfway through logging (here: SQLite, the
    config artifact refused): the partial run is marked FAILED, the folder gets
    mlflow_pending.json naming it, and relog logs the folder and deletes the partial run."""
    from mlflow.exceptions import MlflowException

    from frontal_exp.evaluation import save_local
    from frontal_exp.protocols.base import RunResult
    from frontal_exp.tracking.mlflow_logger import client_for, log_result, tracking_uri
    from frontal_exp.tracking.relog import relog

    cfg = make_cfg("model=identity", output_root=prepare_output_root(tmp_path / "out", tmp_path_factory))
    run_dir = tmp_path / "run"
    result = RunResult(metrics={"net_gain": 0.25, "n": 2.0}, output_dir=run_dir,
                       params={"model": "identity", "enhancer": "none", "embedder": "e", "dataset": "demo"},
                       tables={"items": pd.DataFrame({"item": ["a", "b"], "gain": [0.2, 0.3]})},
                       figures={"triplets": np.full((6, 6, 3), 200, np.uint8)})
    save_local(result, cfg)
    refused = MlflowException("test: the store refused the config artifact")
    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "log_text", lambda *a, **k: (_ for _ in ()).throw(refused))
        with pytest.raises(TrackingError, match="refused the config artifact") as info:
            log_result(cfg, result)
    assert f"-m frontal_exp.tracking.relog {run_dir.resolve()}" in str(info.value)
    pending = json.loads((run_dir / PENDING_FILE).read_text())
    client = client_for(tracking_uri(cfg))
    partial = client.get_run(pending["partial_run_id"])
    assert partial.info.status == "FAILED" and pending["tracking_uri"] == tracking_uri(cfg)

    run_id = relog(run_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["net_gain"] == 0.25
    assert run.info.run_name == pending["run_name"] == "identity | e | demo"
    assert {a.path for a in client.list_artifacts(run_id, "figures")} == {"figures/triplets.png"}
    gone = client.get_run(partial.info.run_id)
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags[RELOGGED_AS_TAG] == run_id
    assert not (run_dir / PENDING_FILE).exists() and (run_dir / RELOGGED_FILE).is_file()
