"""DECA (Feng et al., SIGGRAPH 2021; yfeng95/DECA): FLAME reconstruction from one photo, with
the official files loaded unchanged by this project's own modules, and a CPU frontalizer."""

from .frontalizer import DecaFrontalizer

__all__ = ["DecaFrontalizer"]
