"""Errors a user can hit, one type each, with a message that says what to do."""

from __future__ import annotations


class FrontalExpError(Exception):
    """Base class of every error frontal_exp raises on purpose."""


class ModelFileError(FrontalExpError):
    """A model file is missing or unusable. Every item would fail the same way, so the run
    stops instead of recording it per item."""


class MissingWeightsError(ModelFileError):
    """A model file that frontal_exp cannot download here is not on disk."""


class BadWeightsError(ModelFileError):
    """A model file is on disk but cannot be used: truncated, corrupt, or not the expected model."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        #: the short cause, without the advice (for one-line listings)
        self.reason = reason or message


class BadImageError(FrontalExpError):
    """An image file cannot be read or decoded (truncated, not an image, ...)."""


class NoFaceError(FrontalExpError):
    """No face was found where one was required."""


class FrontalizationError(FrontalExpError):
    """A frontalizer could not process an image (e.g. no face mesh found)."""


class DatasetError(FrontalExpError):
    """A dataset root is missing, empty or not in the expected layout."""


class ConfigError(FrontalExpError, ValueError):
    """A configuration value is invalid (also a ValueError, for code that expects one)."""
