"""A pause right before a run logs to MLflow, for tests that take the tracking server down at
that point (tests/test_team_server.py).

Python imports `sitecustomize` when it starts, from the first folder of its path that holds
one: a test puts this folder on the PYTHONPATH of the runs it starts, and a sweep's worker
processes (joblib) inherit it. With FRONTAL_EXP_TEST_PAUSE=<folder>, every run writes
<folder>/paused.<pid> once its results are on disk, and waits until <folder>/resume exists (at
most 10 minutes), then logs as usual.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def patch_pause(folder: str) -> None:
    from frontal_exp.tracking import mlflow_logger

    log_result = mlflow_logger.log_result

    def paused_log_result(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - log_result's signature
        Path(folder, f"paused.{os.getpid()}").touch()
        deadline = time.monotonic() + 600
        while not Path(folder, "resume").exists():
            if time.monotonic() > deadline:
                raise SystemExit("test: the run was never resumed")
            time.sleep(0.1)
        return log_result(*args, **kwargs)

    mlflow_logger.log_result = paused_log_result  # evaluate() imports it when it logs


if os.environ.get("FRONTAL_EXP_TEST_PAUSE"):
    patch_pause(os.environ["FRONTAL_EXP_TEST_PAUSE"])
