"""Post-processing of frontalized faces (the study's identity-preserving corrections)."""

from frontal_exp.enhancers.base import Enhancer

__all__ = ["Enhancer"]
