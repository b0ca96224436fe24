"""`evaluate(cfg)`: one run, from a composed config to printed and logged results.

The configured `protocol` decides what is measured (the study's Net Gain by default); this
module runs it, saves its tables next to Hydra's outputs and logs it to MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from frontal_exp.config import check_sections, instantiate_checked
from frontal_exp.protocols.base import RunResult
from frontal_exp.protocols.frontalization import (  # noqa: F401 - re-exported for users
    EvalResult,
    format_results,
    summarize,
)

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> RunResult:
    """Run the configured protocol end to end; log to MLflow when `cfg.tracking.enabled`."""
    from frontal_exp.tracking.mlflow_logger import log_result

    t0 = time.perf_counter()
    check_sections(cfg)
    protocol = instantiate_checked(cfg.protocol, "protocol")
    result = protocol.run(cfg)
    result.params.setdefault("protocol", protocol.name)
    result.metrics["seconds"] = time.perf_counter() - t0
    result.output_dir = Path(output_dir) if output_dir else None
    if result.output_dir is not None:
        save_local(result, cfg)
    if cfg.tracking.enabled:
        result.run_id = log_result(cfg, result)
    return result


def save_local(result: RunResult, cfg: DictConfig) -> None:
    """Write the run's tables and figures next to Hydra's outputs (readable without MLflow)."""
    import cv2

    out = result.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, table in result.tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    for name, image in result.figures.items():
        cv2.imwrite(str(out / f"{name}.png"), image)
    (out / "results.json").write_text(
        json.dumps({"params": result.params, "metrics": result.metrics}, indent=2, default=float)
    )
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
