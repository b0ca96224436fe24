"""LivePortrait (KwaiVGI/LivePortrait, MIT) as a frontalizer: official checkpoints, head pose
set to frontal."""

from __future__ import annotations

from .frontalizer import LivePortraitFrontalizer, Motion

__all__ = ["LivePortraitFrontalizer", "Motion"]
