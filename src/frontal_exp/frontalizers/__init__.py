"""Frontalizers: models that turn an angled face photo into a frontal view."""

from frontal_exp.frontalizers.base import Frontalizer

__all__ = ["Frontalizer"]
