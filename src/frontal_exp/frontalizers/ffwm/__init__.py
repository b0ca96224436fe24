"""FFWM (csyxwei/FFWM, MIT code) as a frontalizer: official checkpoints, flow-warped
generator, crop rule approximated from the project's 106 landmarks."""

from __future__ import annotations

from .frontalizer import FFWMFrontalizer, FFWMOutput

__all__ = ["FFWMFrontalizer", "FFWMOutput"]
