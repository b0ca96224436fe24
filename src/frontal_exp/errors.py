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


class CacheKeyError(FrontalExpError, TypeError):
    """A component holds an attribute that cannot be part of a cache key (see
    `frontal_exp.fingerprint`): a programming error in that component, not a bad input."""


class ArtifactError(FrontalExpError):
    """A run's logged artifact exists but cannot be read (artifact store or server unreachable,
    unreadable file): reports stop instead of leaving the run's numbers out."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a run, with the number of items finished, and so cached, by then.

    A KeyboardInterrupt, not a FrontalExpError: no handler of ordinary errors may catch it.
    The command line turns it into one line and exit status 130."""

    def __init__(self, items_done: int) -> None:
        super().__init__(f"interrupted after {items_done} items")
        self.items_done = items_done
