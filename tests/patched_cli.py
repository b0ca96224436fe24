"""`python -m frontal_exp`, with test patches chosen by environment variables, for tests that
need a real process (exit status, signals) in a state that is hard to reach otherwise:

- FRONTAL_EXP_TEST_NOW="2024-01-01 12:00:00": Hydra's `${now:}` reads this time, so
  invocations started apart run "in the same second".
- FRONTAL_EXP_TEST_SLOW=<marker file>: the identity frontalizer does its first batch, then on
  the second writes the marker file and sleeps (a run to interrupt or kill at a known point).
- FRONTAL_EXP_TEST_FAIL=create_parent|close_parent: MLflow refuses to create the sweep's
  parent run, or to log the summary that closes it.

Run as `python tests/patched_cli.py <frontal_exp arguments>`.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path


def patch_clock(when: str) -> None:
    import hydra.core.utils

    fixed = datetime.fromisoformat(when)

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206 - datetime's signature
            return fixed

    hydra.core.utils.datetime = FixedClock


def patch_slow(marker: str) -> None:
    from frontal_exp.frontalizers.identity import IdentityFrontalizer

    calls = []
    original = IdentityFrontalizer.frontalize_batch

    def frontalize_batch(self, images):  # noqa: ANN001, ANN202
        calls.append(len(images))
        if len(calls) > 1:
            Path(marker).write_text(str(os.getpid()))
            time.sleep(600)
        return original(self, images)

    IdentityFrontalizer.frontalize_batch = frontalize_batch


def patch_failure(step: str) -> None:
    from mlflow import MlflowClient

    create_run, log_text = MlflowClient.create_run, MlflowClient.log_text

    def refusing_create_run(self, experiment_id, *args, tags=None, **kwargs):  # noqa: ANN001, ANN202
        if step == "create_parent" and (tags or {}).get("frontal_exp.kind") == "sweep":
            raise OSError("test: the tracking store refused the parent run")
        return create_run(self, experiment_id, *args, tags=tags, **kwargs)

    def refusing_log_text(self, run_id, text, artifact_file, *args, **kwargs):  # noqa: ANN001, ANN202
        if step == "close_parent" and artifact_file == "sweep_summary.txt":
            raise OSError("test: the tracking store refused the sweep summary")
        return log_text(self, run_id, text, artifact_file, *args, **kwargs)

    MlflowClient.create_run, MlflowClient.log_text = refusing_create_run, refusing_log_text


if __name__ == "__main__":
    if os.environ.get("FRONTAL_EXP_TEST_NOW"):
        patch_clock(os.environ["FRONTAL_EXP_TEST_NOW"])
    if os.environ.get("FRONTAL_EXP_TEST_SLOW"):
        patch_slow(os.environ["FRONTAL_EXP_TEST_SLOW"])
    if os.environ.get("FRONTAL_EXP_TEST_FAIL"):
        patch_failure(os.environ["FRONTAL_EXP_TEST_FAIL"])
    from frontal_exp.app import main

    main()
