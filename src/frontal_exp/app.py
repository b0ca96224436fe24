"""The command line: `python -m frontal_exp [overrides]` runs `evaluate` on a Hydra config."""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import secrets
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from frontal_exp.config import register_configs
from frontal_exp.errors import FrontalExpError


def _config_dir() -> str:
    """`conf/` of the checkout this package is installed from (`pip install -e .`), or $FRONTAL_EXP_CONF."""
    env = os.environ.get("FRONTAL_EXP_CONF")
    return str(Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[2] / "conf")


CONFIG_DIR = _config_dir()
log = logging.getLogger("frontal_exp")


def check_config_dir() -> None:
    """Exit with a clear message when the Hydra configs are not where this install expects them."""
    if not (Path(CONFIG_DIR) / "config.yaml").is_file():
        raise SystemExit(
            f"error: no frontal_exp configs at {CONFIG_DIR} (expected conf/config.yaml there). frontal_exp reads "
            "its Hydra configs from the repository's conf/ folder: install it with `pip install -e .` from a "
            "clone, or set FRONTAL_EXP_CONF to a conf/ folder."
        )


def invocation_token() -> str:
    """A random token drawn once per invocation, the end of `hydra.run.dir` and
    `hydra.sweep.dir` (conf/config.yaml): two runs or sweeps started in the same second get
    their own folders (and sweep parent files) instead of overwriting each other's.

    OmegaConf caches a resolver's value in the config (`use_cache`), and Hydra copies that
    cache into every job's config, also into the pickled configs of joblib and submitit
    worker processes, so every job of a sweep resolves its parent's folder."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("invocation_token"):
        OmegaConf.register_new_resolver("invocation_token", invocation_token, use_cache=True)


register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def run(cfg: DictConfig) -> float:
    """Hydra entry point: evaluate, print the results table, return Net Gain (for sweepers)."""
    from frontal_exp.quiet import configure_from

    configure_from(cfg)  # again in each job: a launcher's worker processes may not inherit it
    from frontal_exp.evaluation import evaluate, format_results

    out_dir = HydraConfig.get().runtime.output_dir
    try:
        if cfg.tracking.enabled:
            from frontal_exp.tracking.mlflow_logger import start_tracking

            start_tracking(cfg)  # marks KILLED the runs that killed processes left RUNNING
        result = evaluate(cfg, output_dir=out_dir)
    except FrontalExpError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed; the sweep callback records which one
        raise SystemExit(2) from exc
    except KeyboardInterrupt as exc:
        interrupted(cfg, exc)
    print(format_results(result.metrics, result.params) if "net_gain" in result.metrics else format_summary(result))
    if result.run_id:
        show_metric_columns(cfg, result.run_id, result.metrics)
        print(mlflow_pointer(cfg, result.run_id))
    return float(result.metrics.get("net_gain", float("nan")))


#: per protocol: its summary table in `RunResult.tables`, the columns shown (`prefix*` takes
#: every column so named), the run's counts printed above the table and the metrics below it
SUMMARY_TABLES = {
    "robustness": ("robustness", ["label", "n", "mean", "std", "ci_low", "ci_high", "pairs_sampled", "pairs_no_face"],
                   ["n_images", "n_identities", "no_face_images", "no_face_angle", "no_face_gt",
                    "unreadable_images", "dataset_skipped"], ["margin_angle_vs_gt"]),
    "verification": ("verification", ["condition", "acc_mean", "acc_std", "auc", "tar_far_*", "n_scored",
                                      "n_no_face", "n_excluded", "no_face_images"],
                     ["n_pairs", "n_same", "n_different", "n_images"], []),
}
#: metric names that count things (printed as integers)
COUNT_NAME = re.compile(r"^n$|^n_|_n$|no_face|unreadable|skipped|failed|not_paired|pairs|images|identities"
                        r"|folds|hits|misses|computed")


def is_count(name: str, value: object) -> bool:
    """An integer, or a whole float under a count's name (MLflow keeps every metric a float)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return (isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
            and COUNT_NAME.search(name.rsplit(".", 1)[-1]) is not None)


def format_value(name: str, value: object) -> str:
    """Counts as integers, rates and similarities with 4 decimals, NaN as n/a."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if math.isnan(value):
            return "n/a"
        return str(int(value)) if is_count(name, value) else f"{value:.4f}"
    return str(value)


def format_summary(result) -> str:  # noqa: ANN001 - a protocols.base.RunResult
    """A protocol run's results for the terminal: its params on one line, its counts on one
    line, then its summary table (one row per pair kind or condition); a protocol without a
    summary table gets one `name: value` line per metric."""
    m = result.metrics
    lines = ["  ".join(f"{k}={v}" for k, v in result.params.items())]
    spec = SUMMARY_TABLES.get(result.params.get("protocol", ""))
    table = result.tables.get(spec[0]) if spec else None
    if table is None or table.empty:
        width = max((len(k) for k in m), default=0)
        lines += [f"{key:>{width}}: {format_value(key, value)}" for key, value in m.items()]
        return "\n".join(lines)
    _, wanted, counts, below = spec
    lines.append("  ".join(f"{key}={format_value(key, m[key])}" for key in counts if key in m))
    columns = [c for w in wanted for c in ([w] if not w.endswith("*") else
                                           [t for t in table.columns if t.startswith(w[:-1])]) if c in table.columns]
    shown = table[columns].astype(object)
    for col in columns:
        shown[col] = [format_value(col, v) for v in table[col]]
    lines.append(shown.to_string(index=False))
    lines += [f"{key}: {format_value(key, m[key])}" for key in below if key in m]
    if "seconds" in m:
        lines.append(f"({m['seconds']:.1f} s)")
    return "\n".join(lines)


def show_metric_columns(cfg: DictConfig, run_id: str, metrics: dict) -> None:
    """Keep the experiment's runs-list view (see run_notes.ensure_metrics_view) showing this
    run's key metrics as columns; a failure here is one warning, never a failed run."""
    from frontal_exp.tracking.mlflow_logger import client_for, tracking_uri
    from frontal_exp.tracking.run_notes import ensure_metrics_view

    try:
        client = client_for(tracking_uri(cfg))
        ensure_metrics_view(client, client.get_run(run_id).info.experiment_id, metrics)
    except Exception as exc:  # noqa: BLE001 - the run is logged; only the UI's column choice is missing
        log.warning("could not save the MLflow runs-list view: %s: %s", type(exc).__name__, exc)


def mlflow_pointer(cfg: DictConfig, run_id: str) -> str:
    """Where the run was logged, and (for the local SQLite store) the command and page that
    show it in the MLflow UI: the runs list (not MLflow 3's GenAI overview) in the view that
    shows the key metrics as columns."""
    from frontal_exp.tracking.mlflow_logger import client_for, sqlite_path, tracking_uri
    from frontal_exp.tracking.run_notes import metrics_view_url

    uri = tracking_uri(cfg)
    line = f"MLflow run {run_id} ({uri})"
    if sqlite_path(uri) is None:
        return line
    experiment_id = client_for(uri).get_run(run_id).info.experiment_id
    return (f"{line}\n  view: .venv/bin/mlflow ui --backend-store-uri {uri}  then open "
            f"{metrics_view_url(experiment_id)}")


def interrupt_message(exc: KeyboardInterrupt, use_cache: bool = True) -> str:
    """The one line printed for Ctrl-C (instead of a traceback)."""
    done = getattr(exc, "items_done", None)  # a RunInterrupted from the pipeline
    if not use_cache:
        return "interrupted; nothing is kept (eval.use_cache=false)"
    if done is None:
        return "interrupted; the work done so far is cached, re-run to resume"
    return f"interrupted; {done} item{'' if done == 1 else 's'} done {'is' if done == 1 else 'are'} cached, re-run to resume"


def interrupted(cfg: DictConfig, exc: KeyboardInterrupt) -> NoReturn:
    """Ctrl-C: print one line, mark the sweep's parent run KILLED, exit with status 130."""
    print(interrupt_message(exc, bool(cfg.eval.use_cache)), file=sys.stderr, flush=True)
    if cfg.tracking.enabled and HydraConfig.get().mode == RunMode.MULTIRUN:
        from frontal_exp.tracking.mlflow_logger import client_for, sweep_parent_run_id, tracking_uri

        parent = sweep_parent_run_id()
        if parent:
            client_for(tracking_uri(cfg)).set_terminated(parent, "KILLED")
    raise SystemExit(130) from exc


def main() -> None:
    """`python -m frontal_exp`. A sweep with failed jobs ends here: Hydra stops it by raising the
    first failed job's exception (see sweep_callback.end_failed_sweep), which is turned into the
    summary of the finished jobs, one line per failed job and exit status 1."""
    check_config_dir()
    try:
        run()
    except Exception as exc:
        from frontal_exp.quiet import is_verbose
        from frontal_exp.tracking.sweep_callback import end_failed_sweep

        status = end_failed_sweep(exc, verbose=is_verbose())
        if status is None:  # not a sweep of this process
            raise
        raise SystemExit(status) from None


if __name__ == "__main__":
    main()
