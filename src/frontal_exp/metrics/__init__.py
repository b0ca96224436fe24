"""Similarity metrics and paired statistics."""

from frontal_exp.metrics.stats import PairedComparison, bootstrap_ci, paired_comparison

__all__ = ["PairedComparison", "bootstrap_ci", "paired_comparison"]
