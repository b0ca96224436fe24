"""Protocols: what a run measures (Net Gain, embedder robustness, verification, ...)."""

from frontal_exp.protocols.base import Protocol, RunResult

__all__ = ["Protocol", "RunResult"]
