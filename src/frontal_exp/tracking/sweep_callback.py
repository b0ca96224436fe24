"""Hydra callback: one MLflow parent run per sweep, and a side-by-side summary at its end."""

from __future__ import annotations

import json
import logging
import sys
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
from frontal_exp.tracking.run_notes import NOTE_TAG

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "model", "enhancer", "embedder", "dataset", "n", "angle_to_gt", "frontal_to_gt", "net_gain",
    "net_gain_ci_low", "net_gain_ci_high", "win_rate", "no_face_angle", "no_face_frontal",
    "no_face_gt", "not_paired",
]


#: tag prefix on a sweep's parent run: `sweep.failed_job.<num>` per failed job (its overrides
#: and reason), `sweep.failed_jobs` the list of their numbers
FAILED_JOB_TAG = "sweep.failed_job"


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
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for r in rows:
        r["overrides"] = " ".join(o for o in r["overrides"] if o not in common)
    return pd.DataFrame(rows)


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


class MlflowSweepCallback(Callback):
    """Creates the experiment and the parent run before the jobs start (no races between
    parallel jobs), and closes it with a comparison table of the jobs. A tracking error here
    stops the sweep with a non-zero exit status (see `sweep_tracking`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
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
        """A failed job marks the sweep's parent run FAILED at once: Hydra may stop the sweep
        there, and the parent must not stay RUNNING forever. (This may run in a launcher's
        worker process; an error here is only Hydra's warning, but the job failed, so the
        sweep fails anyway, and a parent left RUNNING is marked KILLED by the next start.)"""
        from hydra.core.utils import JobStatus

        if job_return is None or job_return.status != JobStatus.FAILED or not config.tracking.enabled:
            return
        try:
            from hydra.core.hydra_config import HydraConfig

            parent = Path(HydraConfig.get().sweep.dir) / PARENT_FILE
        except ValueError:
            return
        if parent.is_file():
            run_id = json.loads(parent.read_text())["run_id"]
            client = client_for(tracking_uri(config))
            # one tag per failed job (parallel jobs never overwrite each other's): its overrides
            # and the one-line reason; `sweep.failed_jobs` lists them all when the sweep ends
            reason = " ".join(str(job_return._return_value).split())[:300]
            overrides = " ".join(job_return.overrides or [])
            num = HydraConfig.get().job.num
            line = f"{overrides}: {type(job_return._return_value).__name__}: {reason}"[:5000]
            client.set_tag(run_id, f"{FAILED_JOB_TAG}.{num}", line)
            # the list, from every job's tag so far (Hydra may not reach on_multirun_end)
            client.set_tag(run_id, FAILED_JOB_TAG + "s", ",".join(failed_jobs_of(client.get_run(run_id).data.tags)))
            client.set_terminated(run_id, "FAILED")
            print(f"job {num} failed: {line}", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
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
            failed = client.get_run(run_id).info.status == "FAILED"
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
