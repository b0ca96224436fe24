"""Log a finished run's folder to MLflow later: `python -m frontal_exp.tracking.relog RUN_DIR...`.

A run writes its results into its folder (`results.json`, the tables as CSV, the figures as
PNG, `config_resolved.yaml`, Hydra's `.hydra/config.yaml`) before it logs them to MLflow. When
logging fails (a tracking server that stayed down longer than MLflow's retries), the run fails
with this command in its message and leaves `mlflow_pending.json` in its folder: the tracking
URI, experiment, sweep parent run and run name it was logging to, and the id of the partial run
it had started, if any.

This command logs the folder as one complete MLflow run (params, metrics, config, tables,
figures, the config hash tag, the sweep parent as `mlflow.parentRunId`), deletes the partial
run (MLflow's soft delete: `mlflow gc` purges it, the UI can restore it), and replaces
`mlflow_pending.json` with `mlflow_relogged.json`, so the same folder is not logged twice
(`--force` logs it again). A folder without `mlflow_pending.json` (e.g. a run with
`tracking.enabled=false`) is logged to its config's tracking URI.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from frontal_exp.errors import FrontalExpError
from frontal_exp.protocols.base import RunResult
from frontal_exp.tracking.mlflow_logger import PARENT_FILE, PENDING_FILE, tracking_uri

log = logging.getLogger(__name__)

#: written into a run's folder once this command has logged it
RELOGGED_FILE = "mlflow_relogged.json"
#: tag on the logged run: the folder it was logged from
RELOGGED_FROM_TAG = "frontal_exp.relogged_from"
#: tag on the deleted partial run: the run that replaced it
RELOGGED_AS_TAG = "frontal_exp.relogged_as"


class NotARunFolder(FrontalExpError):
    """The folder is not a finished run's folder (no results.json or config_resolved.yaml)."""


class AlreadyLogged(FrontalExpError):
    """The folder was logged by this command before (see RELOGGED_FILE)."""


def load_run(run_dir: Path) -> tuple[DictConfig, RunResult, dict]:
    """A run folder's config, results (params, metrics, tables, figures) and canonical config."""
    import cv2
    import pandas as pd

    from frontal_exp.tracking import config_id

    missing = [n for n in ("results.json", "config_resolved.yaml") if not (run_dir / n).is_file()]
    if missing:
        raise NotARunFolder(f"{run_dir} is not a finished run's folder: no {' or '.join(missing)} "
                            "(a run writes them when it has measured everything)")
    data = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    tables = {}
    for path in sorted(run_dir.glob("*.csv")):
        try:
            tables[path.stem] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            tables[path.stem] = pd.DataFrame()
    figures = {}
    for path in sorted(run_dir.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, as the run had it
        if image is None:
            raise NotARunFolder(f"{path} cannot be read as an image")
        figures[path.stem] = image
    result = RunResult(metrics=dict(data["metrics"]), params=dict(data["params"]), tables=tables,
                       figures=figures, output_dir=run_dir)
    # the hash of the config as the run computed it: Hydra's unresolved config says which
    # values were interpolations of ignored settings, the resolved one gives their values
    resolved = OmegaConf.to_container(cfg, resolve=True)
    raw_path = run_dir / ".hydra" / "config.yaml"
    raw = OmegaConf.to_container(OmegaConf.load(raw_path), resolve=False) if raw_path.is_file() else resolved
    canonical = config_id._strip(raw, resolved, "")
    return cfg, result, canonical


def run_name_of_folder(cfg: DictConfig, params: dict, run_dir: Path) -> str:
    """The name the run would have had: `tracking.run_name`, else a sweep job's name from its
    overrides and its sweep's, else the single run's name."""
    import yaml

    from frontal_exp.tracking import run_notes

    if cfg.tracking.run_name:
        return str(cfg.tracking.run_name)
    parent = run_dir.parent / PARENT_FILE
    job_file = run_dir / ".hydra" / "overrides.yaml"
    if parent.is_file() and job_file.is_file():
        job = list(yaml.safe_load(job_file.read_text()) or [])
        sweep = json.loads(parent.read_text()).get("overrides")
        return run_notes.sweep_job_name(params, run_notes.varied_overrides(job, sweep))
    return run_notes.single_run_name(params)


def relog(run_dir: str | Path, uri: str | None = None, force: bool = False) -> str:
    """Log one run folder to MLflow; returns the new run's id (see the module's doc)."""
    from frontal_exp.tracking.mlflow_logger import client_for, log_result

    run_dir = Path(run_dir).expanduser().resolve()
    done = run_dir / RELOGGED_FILE
    if done.is_file() and not force:
        record = json.loads(done.read_text())
        raise AlreadyLogged(f"{run_dir} was logged already, as MLflow run {record.get('run_id')} "
                            f"({record.get('tracking_uri')}); pass --force to log it again")
    cfg, result, canonical = load_run(run_dir)
    pending_path = run_dir / PENDING_FILE
    pending = json.loads(pending_path.read_text()) if pending_path.is_file() else {}
    uri = uri or pending.get("tracking_uri") or tracking_uri(cfg)
    cfg.tracking.uri = uri
    if pending.get("experiment"):
        cfg.tracking.experiment = pending["experiment"]
    client = client_for(uri)

    parent = pending.get("parent_run_id")
    if parent is None and (run_dir.parent / PARENT_FILE).is_file():
        parent = json.loads((run_dir.parent / PARENT_FILE).read_text()).get("run_id")
    if parent and not _run_exists(client, parent):
        log.warning("the sweep's parent run %s is not in %s: logging %s without a parent", parent, uri, run_dir)
        parent = None
    name = pending.get("run_name") or run_name_of_folder(cfg, result.params, run_dir)

    run_id = log_result(cfg, result, parent_run_id=parent or "", run_name=name, canonical=canonical)
    client.set_tag(run_id, RELOGGED_FROM_TAG, str(run_dir))
    partial = pending.get("partial_run_id")
    if partial and partial != run_id and _run_exists(client, partial):
        client.set_tag(partial, RELOGGED_AS_TAG, run_id)
        client.delete_run(partial)
    done.write_text(json.dumps({"run_id": run_id, "tracking_uri": uri, "partial_run_id": partial,
                                "relogged_at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    pending_path.unlink(missing_ok=True)
    return run_id


def _run_exists(client, run_id: str) -> bool:  # noqa: ANN001 - an MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m frontal_exp.tracking.relog",
        description="Log finished run folders to MLflow: runs whose logging failed (they say "
                    "so, and leave mlflow_pending.json), or runs made with tracking.enabled=false.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="a run's folder (runs/<time>_<token>, or multirun/<time>_<token>/<job>)")
    parser.add_argument("--tracking-uri", default=None,
                        help="log here instead of the URI the run was logging to")
    parser.add_argument("--force", action="store_true", help="log a folder this command logged before")
    args = parser.parse_args(argv)
    failed = 0
    for run_dir in args.run_dirs:
        try:
            run_id = relog(run_dir, args.tracking_uri, args.force)
        except FrontalExpError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"logged {run_dir} as MLflow run {run_id} ({args.tracking_uri or tracking_uri_of(run_dir)})")
    return 1 if failed else 0


def tracking_uri_of(run_dir: Path) -> str:
    """Where a relogged folder was logged (from RELOGGED_FILE)."""
    return json.loads((Path(run_dir) / RELOGGED_FILE).read_text())["tracking_uri"]


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
