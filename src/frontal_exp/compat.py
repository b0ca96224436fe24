"""Compatibility shims for third-party packages, kept in one place.

basicsr (imported by gfpgan) still imports `torchvision.transforms.functional_tensor`, a module
torchvision removed in 0.17; `ensure_basicsr_importable()` aliases it before basicsr loads.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_FUNCTIONAL_TENSOR = "torchvision.transforms.functional_tensor"


def ensure_basicsr_importable() -> None:
    """Make `import basicsr` / `import gfpgan` work with torchvision >= 0.17.

    Idempotent. Must run before the first basicsr import: basicsr binds names from the
    module at import time. `torchvision.transforms.functional` provides the same public
    functions (basicsr only needs `rgb_to_grayscale`), so aliasing it is enough.
    """
    if _FUNCTIONAL_TENSOR in sys.modules:
        return
    try:
        importlib.import_module(_FUNCTIONAL_TENSOR)
    except ModuleNotFoundError:
        functional = importlib.import_module("torchvision.transforms.functional")
        sys.modules[_FUNCTIONAL_TENSOR] = functional


def import_gfpgan() -> ModuleType:
    """`import gfpgan` after applying the shims it needs."""
    ensure_basicsr_importable()
    return importlib.import_module("gfpgan")
