"""The command line: `python -m frontal_exp [overrides]` runs `evaluate` on a Hydra config."""

from __future__ import annotations

import logging
import os
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
    if "net_gain" in result.metrics:
        print(format_results(result.metrics, result.params))
    else:
        print("  ".join(f"{k}={v}" for k, v in result.params.items()))
        for key, value in result.metrics.items():
            print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if result.run_id:
        print(mlflow_pointer(cfg, result.run_id))
    return float(result.metrics.get("net_gain", float("nan")))


def mlflow_pointer(cfg: DictConfig, run_id: str) -> str:
    """Where the run was logged, and (for the local SQLite store) the command and page that
    show it in the MLflow UI: the runs list, not MLflow 3's GenAI overview."""
    from frontal_exp.tracking.mlflow_logger import client_for, sqlite_path, tracking_uri, ui_url

    uri = tracking_uri(cfg)
    line = f"MLflow run {run_id} ({uri})"
    if sqlite_path(uri) is None:
        return line
    experiment_id = client_for(uri).get_run(run_id).info.experiment_id
    return (f"{line}\n  view: .venv/bin/mlflow ui --backend-store-uri {uri}  then open "
            f"{ui_url(experiment_id)}")


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
    check_config_dir()
    run()


if __name__ == "__main__":
    main()
