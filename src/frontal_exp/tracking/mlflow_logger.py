"""Logging runs to MLflow: params, metrics, per-item tables and figures.

The default store is SQLite at an absolute path under `output_root`, so every job of a sweep
(parallel ones included) writes to one database; `tracking.uri` or `MLFLOW_TRACKING_URI`
point elsewhere (e.g. a team's MLflow server on PostgreSQL) instead.

A tracking server that does not answer is retried by MLflow itself, with backoff, for a bounded
time (`retry_policy`: about 4 minutes by default), so a server restart between or during jobs
loses nothing. When it still does not answer, the run fails loudly (`TrackingError`) and keeps
its results on disk with the command that logs them later (`frontal_exp.tracking.relog`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from frontal_exp.errors import FrontalExpError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from frontal_exp.protocols.base import RunResult

log = logging.getLogger(__name__)


class TrackingError(FrontalExpError):
    """Logging to MLflow failed: the tracking server did not answer within MLflow's retries, or
    the store refused a request. The message says where the run's results are kept and the
    command that logs them once the store is back (`frontal_exp.tracking.relog`)."""


#: written into a run's folder when logging it failed: what `frontal_exp.tracking.relog` needs
#: to log it later (tracking URI, experiment, sweep parent, run name, the partial run's id)
PENDING_FILE = "mlflow_pending.json"


def unreachable(exc: BaseException) -> bool:
    """Whether an error comes from a tracking server that could not be reached (connection
    refused or reset, unknown host, timeout), after MLflow's own retries. MLflow wraps the
    `requests` error in an MlflowException, so the whole chain of causes is searched."""
    return _connection_error(exc) is not None


def retry_wait_seconds(retries: int, backoff_factor: float, backoff_max: float = 120.0) -> float:
    """How long MLflow's HTTP client (urllib3's Retry) waits in all before giving up on a server
    that refuses every connection: nothing before the first retry, then `backoff_factor *
    2**(n-1)` seconds before retry n, each wait at most `backoff_max` (jitter not counted)."""
    return float(sum(min(backoff_factor * 2 ** (n - 1), backoff_max) for n in range(2, retries + 1)))


def retry_policy() -> str:
    """MLflow's retries of a tracking-server request, as configured now, in words."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )

    retries, factor = MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    return (f"{retries} retries over about {retry_wait_seconds(retries, factor):.0f} s "
            f"(MLFLOW_HTTP_REQUEST_MAX_RETRIES={retries}, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR={factor})")


def _tracking_failure_types() -> tuple[type[BaseException], ...]:
    """Errors that mean the tracking store failed (not a bug in the logging code)."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


def relog_command(run_dir: str | os.PathLike) -> str:
    """The command that logs a run's folder to MLflow (see `frontal_exp.tracking.relog`)."""
    return f"{shlex.quote(sys.executable)} -m frontal_exp.tracking.relog {shlex.quote(str(run_dir))}"


def tracking_uri(cfg: DictConfig) -> str:
    """The tracking URI of a config: tracking.uri, else $MLFLOW_TRACKING_URI, else SQLite."""
    if cfg.tracking.uri:
        return str(cfg.tracking.uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return default_sqlite_uri(cfg.output_root)


def default_sqlite_uri(output_root: str | os.PathLike) -> str:
    db = Path(output_root).expanduser().resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


#: SQLite URIs whose schema this process has already created or found (see `client_for`)
_SCHEMA_READY: set[str] = set()


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for a URI.

    MLflow creates (or migrates) a SQLite database's schema when the first client opens it;
    two processes doing that at once fail ("duplicate column name"), so the first client of
    each process opens a SQLite store under a file lock, `<db>.lock`: one process creates
    the schema, the others wait and find it. (MLflow sets a 20 s SQLite busy timeout per
    session, so parallel jobs then wait for each other's writes.)
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None or uri in _SCHEMA_READY:
        return MlflowClient(tracking_uri=uri)
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        client = MlflowClient(tracking_uri=uri)  # opens the store: creates the schema if new
    _SCHEMA_READY.add(uri)
    return client


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path).expanduser() if path and path != ":memory:" else None


HOST_TAG = "frontal_exp.host"
PID_TAG = "frontal_exp.pid"
#: when the process started (clock ticks since boot, Linux): a pid alone is reused
PID_START_TAG = "frontal_exp.pid_start"


def process_start(pid: int) -> str:
    """When process `pid` started, as the kernel records it (field 22 of /proc/PID/stat), or
    "" where there is no /proc (macOS) or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # fields after "(comm)": state is field 3


def process_tags() -> dict[str, str]:
    """The host, process id and process start time of this process, tagged on every run and
    sweep parent when it is created, so a later start can tell a run whose process died from
    a live one, even when the pid has been reused since (containers restart at small pids)."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_START_TAG: process_start(pid)}


def process_alive(pid: int, started: str = "") -> bool:
    """Whether the process that had this id (and, when known, this start time) still runs
    on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    # the same pid with another start time is a new process: the run's own is gone
    return not started or process_start(pid) in ("", started)


def mark_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Set KILLED every RUNNING run (jobs and sweep parents) of an experiment that was started
    on this host by a process that no longer exists (killed by SIGKILL, the OOM killer, a
    crash): it can never finish. Runs of other hosts are left alone. Returns their ids."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    )
    killed = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and not process_alive(int(pid), run.data.tags.get(PID_START_TAG, "")):
            client.set_tag(run.info.run_id, "frontal_exp.killed", f"process {pid} on {host} is gone")
            client.set_terminated(run.info.run_id, "KILLED")
            log.warning("MLflow run %s was left RUNNING by process %s, which is gone: marked KILLED",
                        run.info.run_id, pid)
            killed.append(run.info.run_id)
    return killed


def start_tracking(cfg: DictConfig) -> tuple[MlflowClient, str]:
    """At the start of a run or sweep: the client and experiment id, with the runs that dead
    processes left RUNNING marked KILLED (see `mark_dead_runs`)."""
    uri = tracking_uri(cfg)
    try:
        client = client_for(uri)
        exp_id = ensure_experiment(client, cfg.tracking.experiment, cfg.output_root)
        mark_dead_runs(client, exp_id)
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise TrackingError(
            f"the MLflow tracking server at {uri} did not answer within {retry_policy()}: "
            f"{_reason(exc)}. Nothing was run. Start the server (or check tracking.uri and "
            "MLFLOW_TRACKING_URI), or set tracking.enabled=false to run without MLflow."
        ) from exc
    return client, exp_id


def _reason(exc: BaseException, limit: int = 300) -> str:
    """One line on why a tracking call failed: for a server that could not be reached, the
    connection error underneath MLflow's and urllib3's wrappers (`... Connection refused`)."""
    cause = _connection_error(exc)
    if cause is not None:
        inner = getattr(cause.args[0], "reason", None) if cause.args else None  # urllib3's MaxRetryError
        exc = inner if isinstance(inner, BaseException) else cause
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]


def _connection_error(exc: BaseException) -> BaseException | None:
    """The `requests` connection error or timeout in an error's chain of causes, if any."""
    import requests

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


#: the experiment tag MLflow 3 uses for an experiment's kind; "custom_model_development" is a
#: classic ML experiment (runs list, metric columns), not a GenAI one (traces "Overview")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
ML_EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(client: MlflowClient, name: str, output_root: str | os.PathLike) -> str:
    """Experiment id by name, created with an absolute artifact location when new, and marked
    a classic ML experiment (see `mark_ml_experiment`)."""
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            mark_ml_experiment(client, exp.experiment_id, exp.tags)
            return exp.experiment_id
        # A local store gets an absolute artifact folder (not one relative to wherever the
        # job ran); a tracking server manages its own artifact store.
        local = client.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in client.tracking_uri
        artifacts = (Path(output_root).expanduser().resolve() / "mlartifacts").as_uri() if local else None
        try:
            return client.create_experiment(name, artifact_location=artifacts,
                                            tags={EXPERIMENT_KIND_TAG: ML_EXPERIMENT_KIND})
        except Exception:  # noqa: BLE001 - another job created it first; look again
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not create or find MLflow experiment {name!r}")


def mark_ml_experiment(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """Tag an experiment `mlflow.experimentKind = custom_model_development` unless it has a
    kind already (one a user chose is kept). MLflow 3 versions that read the tag then open the
    experiment on its runs list; 3.17's UI follows the `workflowType` URL parameter instead,
    which `ui_url` sets."""
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)


def ui_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment's runs list (not the GenAI "Overview")."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:500]
    return out


def log_result(cfg: DictConfig, result: RunResult, parent_run_id: str | None = None,
               run_name: str | None = None, canonical: dict | None = None) -> str:
    """Log one run as an MLflow run (a child of the sweep's parent run in a multirun).

    `run_name` and `canonical` (the config whose hash tags the run) default to those of the
    current job; `frontal_exp.tracking.relog` passes the ones the run had.

    When logging fails (a tracking server that did not answer within MLflow's retries, a store
    that refused a request), a run whose results are on disk (`result.output_dir`) gets a
    `PENDING_FILE` there, the partial MLflow run is marked FAILED where the store still
    answers, and a `TrackingError` names the command that logs the folder later."""
    from frontal_exp.tracking import config_id

    if parent_run_id is None:
        parent_run_id = sweep_parent_run_id()
    if run_name is None:
        run_name = run_name_of(cfg, result.params)
    if canonical is None:
        canonical = config_id.canonical_config(cfg)
    uri = tracking_uri(cfg)
    client, run_id = None, None
    try:
        client = client_for(uri)
        exp_id = ensure_experiment(client, cfg.tracking.experiment, cfg.output_root)
        run_id = _create_run(client, exp_id, cfg, result, parent_run_id, run_name, canonical)
        _log_run_data(client, run_id, cfg, result, canonical)
        client.set_terminated(run_id, "FINISHED")
    except BaseException as exc:
        if client is not None and run_id is not None and not unreachable(exc):
            with contextlib.suppress(Exception):  # the store may refuse this too
                client.set_terminated(run_id, "FAILED")
        if not isinstance(exc, Exception):  # Ctrl-C: the caller says what is kept
            raise
        kept = keep_for_relog(cfg, result, uri, parent_run_id, run_name, run_id, exc)
        if kept is None:  # nothing on disk to log later
            raise
        what = (f"the MLflow tracking server at {uri} did not answer within {retry_policy()}"
                if unreachable(exc) else f"MLflow ({uri}) failed")
        message = (f"{what}: {_reason(exc)}. The run's results are kept in {kept}; once the "
                   f"tracking store is back, log them with:\n  {relog_command(kept)}")
        if isinstance(exc, _tracking_failure_types()):
            raise TrackingError(message) from exc
        log.error("%s", message)  # a bug in the logging code: keep its own traceback
        raise
    return run_id


def _create_run(client: MlflowClient, exp_id: str, cfg: DictConfig, result: RunResult,
                parent_run_id: str | None, run_name: str, canonical: dict) -> str:
    from frontal_exp.tracking import config_id, run_notes

    tags = {"frontal_exp.kind": "job", "frontal_exp.protocol": result.params.get("protocol", ""),
            config_id.CONFIG_HASH_TAG: config_id.config_hash(canonical), **process_tags()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    figures = list(result.figures) if cfg.tracking.log_images else []
    tags[run_notes.NOTE_TAG] = run_notes.run_note(result.metrics, result.params, figures)
    return client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id


def _log_run_data(client: MlflowClient, run_id: str, cfg: DictConfig, result: RunResult,
                  canonical: dict) -> None:
    """Params, metrics, the config, tables and figures of a run."""
    import pandas as pd
    from mlflow.entities import Metric, Param, RunTag

    from frontal_exp.tracking import config_id

    container = OmegaConf.to_container(cfg, resolve=True)
    params = {**flatten(container), **{f"run.{k}": v for k, v in result.params.items()}}
    items = list(params.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(f"param.{k}", v) for k, v in result.params.items()])
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    client.log_dict(run_id, canonical, config_id.CANONICAL_ARTIFACT)
    tables = {"results": pd.DataFrame([{**result.params, **result.metrics}]), **result.tables}
    for name, table in tables.items():
        client.log_table(run_id, data=table, artifact_file=f"tables/{name}.json")
    if cfg.tracking.log_images:
        for name, image in result.figures.items():
            client.log_image(run_id, image[:, :, ::-1].copy(), f"figures/{name}.png")
    if result.output_dir is not None:
        for name in result.tables:
            if (result.output_dir / f"{name}.csv").is_file():
                client.log_artifact(run_id, str(result.output_dir / f"{name}.csv"), "tables")


def keep_for_relog(cfg: DictConfig, result: RunResult, uri: str, parent_run_id: str | None,
                   run_name: str, partial_run_id: str | None, exc: BaseException) -> Path | None:
    """Write `PENDING_FILE` into a run's folder whose results are on disk (`results.json`, see
    `evaluation.save_local`): what logging it later needs. Returns the folder, or None where
    nothing is on disk."""
    out = result.output_dir
    if out is None or not (Path(out) / "results.json").is_file():
        return None
    out = Path(out).resolve()
    record = {"tracking_uri": uri, "experiment": str(cfg.tracking.experiment),
              "parent_run_id": parent_run_id, "run_name": run_name,
              "partial_run_id": partial_run_id, "error": _reason(exc, 2000),
              "failed_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / PENDING_FILE).write_text(json.dumps(record, indent=2))
    return out


def run_name_of(cfg: DictConfig, params: dict[str, str]) -> str:
    """`tracking.run_name` when set; else, for a sweep job, the model/enhancer short names and
    the overrides the sweep varied (`mesh3d strength=0.5 min_angle=6`); else
    `model+enhancer | embedder | dataset`."""
    from frontal_exp.tracking import run_notes

    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    job = job_overrides()
    if job is None:
        return run_notes.single_run_name(params)
    sweep = (sweep_info() or {}).get("overrides")
    return run_notes.sweep_job_name(params, run_notes.varied_overrides(job, sweep))


def job_overrides() -> list[str] | None:
    """The command-line overrides of this sweep job (Hydra's `hydra.overrides.task`), or None
    outside a sweep."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:
        return None
    return list(hc.overrides.task) if hc.mode == RunMode.MULTIRUN else None


PARENT_FILE = "mlflow_parent.json"


def sweep_parent_run_id() -> str | None:
    """The parent run of the current Hydra sweep, if this job is part of one."""
    return (sweep_info() or {}).get("run_id")


def sweep_info() -> dict | None:
    """What the sweep callback recorded for the current Hydra sweep (`PARENT_FILE`: the parent
    run id, the experiment id and the sweep's command-line overrides), or None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    path = Path(hc.sweep.dir) / PARENT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
