"""Hydra callback: one MLflow parent run per sweep, and a side-by-side summary at its end."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from frontal_exp.tracking.mlflow_logger import (
    PARENT_FILE,
    client_for,
    process_tags,
    start_tracking,
    tracking_uri,
)
from frontal_exp.tracking.run_notes import NOTE_TAG, ensure_metrics_view

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "model", "enhancer", "embedder", "dataset", "n", "angle_to_gt", "frontal_to_gt", "net_gain",
    "net_gain_ci_low", "net_gain_ci_high", "win_rate", "no_face_angle", "no_face_frontal",
    "no_face_gt", "not_paired",
]


#: tag prefix on a sweep's parent run: `sweep.failed_job.<num>` per failed job (its overrides
#: and reason), `sweep.failed_jobs` the list of their numbers
FAILED_JOB_TAG = "sweep.failed_job"


#: written into a failed job's folder (its number, overrides and one-line reason), so the
#: sweep's end can name every failed job, also without MLflow and from launcher workers
FAILED_JOB_FILE = "job_failed.json"


def failed_jobs_of(tags: dict[str, str]) -> list[str]:
    """The numbers of a sweep's failed jobs, from its parent run's tags, in job order."""
    prefix = FAILED_JOB_TAG + "."
    return sorted((k[len(prefix):] for k in tags if k.startswith(prefix)), key=lambda n: (len(n), n))


def collect_sweep(sweep_dir: Path) -> pd.DataFrame:
    """One row per finished job of a sweep, from the jobs' results.json files."""
    rows = []
    for path in sorted(sweep_dir.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        data = json.loads(path.read_text())
        rows.append({"job": path.parent.name, "overrides": _job_overrides(path.parent),
                     **data["params"], **data["metrics"]})
    # show what the sweep varied, not what every job shares
    common = shared_overrides(sweep_dir)
    for r in rows:
        r["overrides"] = " ".join(o for o in r["overrides"] if o not in common)
    return pd.DataFrame(rows)


def shared_overrides(sweep_dir: Path) -> set[str]:
    """The overrides every job of a sweep has, failed jobs included (what it did not vary)."""
    jobs = [set(_job_overrides(d)) for d in sweep_dir.iterdir() if (d / ".hydra" / "overrides.yaml").is_file()]
    return set.intersection(*jobs) if jobs else set()


def failed_jobs(sweep_dir: Path) -> list[dict]:
    """The failed jobs of a sweep, in job order: {"num", "overrides", "reason"} each."""
    records = [json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{FAILED_JOB_FILE}")]
    return sorted(records, key=lambda r: int(r["num"]))


def failed_job_line(record: dict) -> str:
    return f"job {record['num']} failed: {record['overrides'] or '(no overrides)'}: {record['reason']}"


def _job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides of one job (what the sweep varied), from Hydra's record."""
    import yaml

    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return list(yaml.safe_load(path.read_text()) or [])


def format_summary(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no finished jobs)"
    cols = ["job", "overrides", *[c for c in SUMMARY_COLUMNS if c in df.columns]]
    return df[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}")


def sweep_note(df: pd.DataFrame) -> str:
    """The sweep parent's description in Markdown: each finished job's varied overrides and
    its Net Gain with 95% CI and N (the full table is the `sweep_summary` artifact)."""
    lines = [f"### Sweep: {len(df)} finished job{'s' if len(df) != 1 else ''}", ""]
    for r in df.to_dict("records"):
        gain = ""
        if pd.notna(r.get("net_gain")) and pd.notna(r.get("n")):  # a frontalization job
            gain = (f": Net Gain {r['net_gain']:+.4f} (95% CI [{r['net_gain_ci_low']:+.4f}, "
                    f"{r['net_gain_ci_high']:+.4f}]), N = {int(r['n'])}")
        lines.append(f"- job {r['job']} `{r['overrides'] or '(no overrides)'}`{gain}")
    return "\n".join(lines)


@contextmanager
def sweep_tracking(step: str, config: DictConfig) -> Iterator[None]:
    """Fail the sweep (exit status 1) when its MLflow tracking fails in `step`.

    Hydra catches an exception raised by a callback, prints it as a warning and goes on, so the
    sweep would end with status 0 and a missing or RUNNING parent run. SystemExit is not an
    Exception: Hydra lets it through and the process exits with its message."""
    try:
        yield
    except Exception as exc:
        log.exception("MLflow tracking failed (%s)", step)
        raise SystemExit(
            f"error: MLflow tracking failed while {step}: {type(exc).__name__}: {exc}\n"
            f"The sweep is stopped: check the tracking store ({tracking_uri(config)}), or set "
            "tracking.enabled=false to run without MLflow, and run the sweep again."
        ) from exc


#: the config of the sweep this process started and has not ended (see end_failed_sweep)
_open_sweep: dict[str, Any] = {}


def end_failed_sweep(exc: BaseException, verbose: bool = False) -> int | None:
    """After Hydra stopped a sweep on a failed job (it raises the job's exception from the
    sweeper, so `on_multirun_end` never runs): print the summary of the jobs that finished and
    each failed job's overrides and reason, close the parent run FAILED, return exit status 1.
    None when no sweep of this process is open (the error is not a sweep's)."""
    config = _open_sweep.get("config")
    if config is None:
        return None
    verbose = verbose or _open_sweep.get("full_error") == "1"  # the user's HYDRA_FULL_ERROR=1 too
    sweep_dir = Path(config.hydra.sweep.dir)
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    failed = failed_jobs(sweep_dir)
    if config.tracking.enabled and (sweep_dir / PARENT_FILE).is_file():
        with sweep_tracking("marking the sweep's parent run FAILED", config):
            run_id = json.loads((sweep_dir / PARENT_FILE).read_text())["run_id"]
            client_for(tracking_uri(config)).set_terminated(run_id, "FAILED")  # kept FAILED below
    MlflowSweepCallback().on_multirun_end(config)  # the finished jobs' summary, the parent closed
    # each failed job by what the sweep varied, as in the summary (not the overrides all jobs share)
    common = shared_overrides(sweep_dir)
    lines = [failed_job_line({**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in common)})
             for r in failed]
    if not failed:  # the launcher or sweeper failed, not a job
        lines = [f"the sweep stopped: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}"]
    finished = len(collect_sweep(sweep_dir))
    print(f"Sweep FAILED ({len(failed)} job{'s' if len(failed) != 1 else ''} failed, {finished} finished):\n  "
          + "\n  ".join(lines) + ("" if verbose else "\n(verbose=true shows the traceback)"),
          file=sys.stderr, flush=True)
    return 1


class MlflowSweepCallback(Callback):
    """Creates the experiment and the parent run before the jobs start (no races between
    parallel jobs), and closes it with a comparison table of the jobs. A tracking error here
    stops the sweep with a non-zero exit status (see `sweep_tracking`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra prints a failed job's traceback and exits 1 from inside `hydra.main`; with
        # HYDRA_FULL_ERROR it raises instead, so frontal_exp.app.main can end the sweep itself
        _open_sweep.clear()
        _open_sweep.update(config=config, full_error=os.environ.get("HYDRA_FULL_ERROR"))
        os.environ["HYDRA_FULL_ERROR"] = "1"
        if not config.tracking.enabled:
            return
        with sweep_tracking("creating the sweep's parent run", config):
            sweep_dir = Path(config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            client, exp_id = start_tracking(config)
            overrides = " ".join(config.hydra.overrides.task)
            run = client.create_run(exp_id, run_name=f"sweep {sweep_dir.name}",
                                    tags={"frontal_exp.kind": "sweep", "sweep.overrides": overrides[:5000],
                                          "sweep.dir": str(sweep_dir.resolve()), **process_tags()})
            # the jobs name their runs by the overrides they vary from these (see run_name_of)
            (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": run.info.run_id, "experiment_id": exp_id,
                                                             "overrides": list(config.hydra.overrides.task)}))
        log.info("MLflow parent run %s", run.info.run_id)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """A failed job prints its line (`job N failed: <overrides>: <reason>`), leaves it in
        its folder (FAILED_JOB_FILE, for the sweep's end) and marks the sweep's parent run
        FAILED at once: Hydra may stop the sweep there, and the parent must not stay RUNNING
        forever. (This may run in a launcher's worker process; an error here is only Hydra's
        warning, but the job failed, so the sweep fails anyway, and a parent left RUNNING is
        marked KILLED by the next start.)"""
        from hydra.core.utils import JobStatus

        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        try:
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
        except ValueError:
            return
        exc = job_return._return_value
        record = {"num": int(hydra_cfg.job.num), "overrides": " ".join(job_return.overrides or []),
                  "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        job_dir = Path(hydra_cfg.runtime.output_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / FAILED_JOB_FILE).write_text(json.dumps(record))
        print(failed_job_line(record), file=sys.stderr, flush=True)
        parent = Path(hydra_cfg.sweep.dir) / PARENT_FILE
        if config.tracking.enabled and parent.is_file():
            run_id = json.loads(parent.read_text())["run_id"]
            client = client_for(tracking_uri(config))
            # one tag per failed job (parallel jobs never overwrite each other's): its overrides
            # and the one-line reason; `sweep.failed_jobs` lists them all when the sweep ends
            line = f"{record['overrides']}: {record['reason']}"[:5000]
            client.set_tag(run_id, f"{FAILED_JOB_TAG}.{record['num']}", line)
            # the list, from every job's tag so far (Hydra may not reach on_multirun_end)
            client.set_tag(run_id, FAILED_JOB_TAG + "s", ",".join(failed_jobs_of(client.get_run(run_id).data.tags)))
            client.set_terminated(run_id, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_open_sweep()
        sweep_dir = Path(config.hydra.sweep.dir)
        df = collect_sweep(sweep_dir)
        text = format_summary(df)
        print(f"\nSweep summary ({sweep_dir}):\n{text}\n")
        if not df.empty:
            df.to_csv(sweep_dir / "summary.csv", index=False)
        if not config.tracking.enabled:
            return
        with sweep_tracking("closing the sweep's parent run", config):
            run_id = json.loads((sweep_dir / PARENT_FILE).read_text())["run_id"]
            client = client_for(tracking_uri(config))
            if not df.empty:
                client.log_table(run_id, data=df, artifact_file="tables/sweep_summary.json")
                client.log_text(run_id, text, "sweep_summary.txt")
                client.set_tag(run_id, NOTE_TAG, sweep_note(df))
                # report.html / report.md as the parent's artifacts; an error is one warning line
                from frontal_exp.report import log_sweep_report

                if config.tracking.get("sweep_report", True):
                    log_sweep_report(client, config.tracking.experiment, run_id, sweep_dir / "report",
                                     tracking_uri(config), int(config.eval.bootstrap))
            # the sweep at a glance in the runs list's collapsed parent row (and its view's columns)
            from mlflow.entities import Metric

            metrics = sweep_metrics(df, len(failed_jobs(sweep_dir)))
            client.log_batch(run_id, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in metrics.items()])
            ensure_metrics_view(client, client.get_run(run_id).info.experiment_id, metrics)
            failed = client.get_run(run_id).info.status == "FAILED"
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def sweep_metrics(df: pd.DataFrame, n_failed: int) -> dict[str, float]:
    """A sweep parent's metrics: jobs run and failed, and the best Net Gain among the finished."""
    out = {"n_jobs": float(len(df) + n_failed), "n_failed": float(n_failed)}
    if "net_gain" in df.columns and df["net_gain"].notna().any():
        out["best_net_gain"] = float(df["net_gain"].max())
    return out


def close_open_sweep() -> None:
    """Forget the open sweep and give HYDRA_FULL_ERROR back its value from before it."""
    if not _open_sweep:
        return
    before = _open_sweep.get("full_error")
    _open_sweep.clear()
    if before is None:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    else:
        os.environ["HYDRA_FULL_ERROR"] = before
