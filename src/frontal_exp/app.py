"""The command line: `python -m frontal_exp [overrides]` runs `evaluate` on a Hydra config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

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

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def run(cfg: DictConfig) -> float:
    """Hydra entry point: evaluate, print the results table, return Net Gain (for sweepers)."""
    from frontal_exp.evaluation import evaluate, format_results

    out_dir = HydraConfig.get().runtime.output_dir
    try:
        result = evaluate(cfg, output_dir=out_dir)
    except FrontalExpError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed; the sweep callback records which one
        raise SystemExit(2) from exc
    if "net_gain" in result.metrics:
        print(format_results(result.metrics, result.params))
    else:
        print("  ".join(f"{k}={v}" for k, v in result.params.items()))
        for key, value in result.metrics.items():
            print(f"{key:>28}: {value:.4f}" if isinstance(value, float) else f"{key:>28}: {value}")
    if result.run_id:
        print(f"MLflow run {result.run_id} ({os.environ.get('MLFLOW_TRACKING_URI') or cfg.tracking.uri or 'sqlite: ' + str(Path(cfg.output_root).resolve() / 'mlflow.db')})")
    return float(result.metrics.get("net_gain", float("nan")))


def main() -> None:
    check_config_dir()
    run()


if __name__ == "__main__":
    main()
