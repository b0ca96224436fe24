"""What every protocol returns: metrics, named tables and figures, logged the same way."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig


@dataclass
class RunResult:
    """The outcome of one run of a protocol.

    `tables` are logged as MLflow tables (tables/<name>.json) and CSV files; `figures` are
    BGR uint8 images logged as figures/<name>.png.
    """

    metrics: dict[str, float]
    params: dict[str, str] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    run_id: str | None = None
    output_dir: Path | None = None

    def add(self, other: RunResult) -> None:
        """Merge an analysis' output into this result."""
        self.metrics.update(other.metrics)
        self.params.update(other.params)
        self.tables.update(other.tables)
        self.figures.update(other.figures)


class Protocol(ABC):
    """One kind of measurement (Net Gain, embedder robustness, verification, ...)."""

    name: str = "protocol"

    @abstractmethod
    def run(self, cfg: DictConfig) -> RunResult:
        """Run on the configured dataset / models; log nothing (the caller logs)."""
