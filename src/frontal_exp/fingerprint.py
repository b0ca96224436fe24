"""What a cached result depends on: the code that made it, every setting, the model files.

Every cache key is built from three parts, so a cached entry is reused only when the same
code with the same settings and the same weights would compute it again:

- `code_fingerprint(obj)`: a hash of the source of the module(s) defining `obj` and of every
  `frontal_exp` module they import, transitively (found by reading the import statements,
  including those inside functions), plus the versions of the third-party packages those
  modules import. Modules that cannot change results (reports, tracking, the CLI, figures,
  the cache's own storage) are left out, so editing them keeps caches valid.
- `settings_key(obj)`: every attribute of a component, private ones included. Model files
  are represented by their content hash (`file_identity`); nested components by their own
  `cache_key()`. Attributes that hold runtime state (loaded models, locks, counters) are
  named in the class attribute `runtime_attrs` and left out.
- `component_key(obj)`: name + code fingerprint + settings: the default `cache_key()` of
  frontalizers, enhancers, detectors, recognizers and embedders.

Fingerprints are computed once per process (source files and model files are hashed once).
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import types
from collections.abc import Mapping, Sequence, Set
from functools import cache
from pathlib import Path, PurePath

import numpy as np

from frontal_exp.errors import CacheKeyError

PACKAGE = "frontal_exp"
PACKAGE_DIR = Path(__file__).resolve().parent

#: modules (and packages) whose code cannot change a cached result: leaving them out of
#: fingerprints means editing them does not invalidate caches
NOT_RESULTS = (
    "frontal_exp.__main__",
    "frontal_exp.app",
    "frontal_exp.cache",
    "frontal_exp.cli",
    "frontal_exp.figures",
    "frontal_exp.report",
    "frontal_exp.tracking",
)


# -- code ------------------------------------------------------------------------------------


def _in_package(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _excluded(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in NOT_RESULTS)


def _module_file(module: str) -> Path | None:
    """The source file of a module: inside the package by path (nothing is imported), else
    the file of an already imported module (a component defined outside the package)."""
    if _in_package(module):
        base = PACKAGE_DIR.joinpath(*module.split(".")[1:])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None
    file = getattr(sys.modules.get(module), "__file__", None)
    return Path(file) if file and str(file).endswith(".py") else None


def _read_source(module: str) -> bytes:
    """Source bytes of a module (b"" when it has no source file). Tests replace this."""
    path = _module_file(module)
    return path.read_bytes() if path is not None else b""


def _is_package(module: str) -> bool:
    path = _module_file(module)
    return path is not None and path.name == "__init__.py"


def _imports(module: str, source: bytes) -> tuple[set[str], set[str]]:
    """(frontal_exp modules, third-party top-level names) imported anywhere in `source`."""
    ours: set[str] = set()
    others: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ours, others

    def add(name: str) -> None:
        if _in_package(name):
            ours.add(name)
        else:
            others.add(name.split(".")[0])

    here = module if _is_package(module) else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            add(base)
            # `from pkg import sub` imports the module pkg.sub when there is one
            for alias in node.names:
                if _in_package(base) and _module_file(f"{base}.{alias.name}") is not None:
                    add(f"{base}.{alias.name}")
    return ours, others


def _parents(module: str) -> list[str]:
    """The packages above a module (importing it runs their __init__)."""
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@cache
def _closure(roots: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules, third-party names): `roots` and every frontal_exp module they import,
    transitively, without the NOT_RESULTS ones. The packages above a module are hashed too,
    but what a package's __init__ imports only counts when the package itself is imported
    (editing embedders/embedder.py does not change a module that imports embedders/packaged.py)."""
    seen: set[str] = set()
    walked: set[str] = set()
    third: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in walked or _excluded(module):
            continue
        walked.add(module)
        seen.add(module)
        seen.update(p for p in _parents(module) if not _excluded(p))
        if module == __name__:
            continue  # this module makes keys (hashed), what it imports does not make results
        ours, others = _imports(module, _read_source(module))
        third |= others
        todo.extend(m for m in ours if _module_file(m) is not None)
    if "frontal_exp.embedders.packaged" in seen:
        # model files shipped inside packages: identified by those packages' versions
        from frontal_exp.embedders.packaged import PACKAGED_MODELS

        third |= {package for package, _ in PACKAGED_MODELS.values()}
    third -= set(sys.stdlib_module_names) | {PACKAGE}
    return tuple(sorted(seen)), tuple(sorted(third))


@cache
def _distributions() -> dict[str, list[str]]:
    """Importable top-level names -> the distributions providing them: what
    `importlib.metadata.packages_distributions()` returns, read 5x faster (it turns every line
    of every RECORD into a path object and, once `importlib_metadata` is imported, checks that
    each file exists: about a second per process with this project's packages). A
    distribution's names are those of its top_level.txt, else the first part of the paths of
    the .py files its RECORD lists that exist (tests/test_cache_keys.py compares the two)."""
    import csv
    from importlib.metadata import distributions

    found: dict[str, list[str]] = {}
    for dist in distributions():
        names = (dist.read_text("top_level.txt") or "").split()
        if not names:
            record = dist.read_text("RECORD")
            if record is None:  # no RECORD (an egg): the slow, general way
                names = {f.parts[0] if len(f.parts) > 1 else f.with_suffix("").name
                         for f in dist.files or () if f.suffix == ".py"}
            else:
                files: dict[str, list[str]] = {}
                for row in csv.reader(record.splitlines()):
                    if row and row[0].endswith(".py"):
                        parts = row[0].split("/")
                        files.setdefault(parts[0] if len(parts) > 1 else parts[0][:-3], []).append(row[0])
                names = [top for top, paths in files.items()
                         if any(Path(dist.locate_file(f)).exists() for f in paths)]
        for top in names:
            found.setdefault(top, []).append(dist.metadata["Name"])
    return found


@cache
def package_version(top_level: str) -> str:
    """Version(s) of the installed distribution(s) providing an importable name, or
    "absent" (e.g. "cv2" -> "opencv-python-headless 4.10.0.84")."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in sorted(set(_distributions().get(top_level, []))):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            continue
    return ",".join(found) or "absent"


def _roots(obj: object) -> tuple[str, ...]:
    if isinstance(obj, str):
        return (obj,)
    if isinstance(obj, types.ModuleType):
        return (obj.__name__,)
    cls = obj if isinstance(obj, type) else type(obj)
    # the class and its bases: an inherited method is code of the result too
    modules = {c.__module__ for c in cls.__mro__}
    return tuple(sorted(modules - {"builtins", "abc"}))


@cache
def _code_fingerprint(roots: tuple[str, ...]) -> str:
    modules, third = _closure(roots)
    h = hashlib.sha256()
    for module in modules:
        h.update(f"{module}\0".encode())
        h.update(hashlib.sha256(_read_source(module)).digest())
    for name in third:
        h.update(f"{name}={package_version(name)}\0".encode())
    h.update(f"python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    return h.hexdigest()[:16]


def code_fingerprint(obj: object) -> str:
    """Hash of the code that computes `obj`'s results: a module name, a module, a class or an
    instance (its class and base classes' modules), with the frontal_exp modules they import
    and the versions of the third-party packages imported along the way."""
    return _code_fingerprint(_roots(obj))


def code_modules(obj: object) -> tuple[str, ...]:
    """The frontal_exp (and other) modules `code_fingerprint(obj)` hashes (for inspection)."""
    return _closure(_roots(obj))[0]


# -- model files -----------------------------------------------------------------------------


@cache
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> str:
    """Content hash of a (model) file, computed once per process while its size and mtime
    stay the same: cached results follow the weights, not the file's name or place."""
    st = os.stat(path)
    return _content_hash(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


# -- settings --------------------------------------------------------------------------------


def _runtime_attrs(obj: object) -> set[str]:
    names: set[str] = set()
    for cls in type(obj).__mro__:
        names |= set(cls.__dict__.get("runtime_attrs", ()))
    return names


def _value_key(value: object, where: str) -> str:
    """A canonical text for one setting value; model files by content, components by key."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return repr(value)
    if isinstance(value, PurePath):
        path = Path(value)
        return f"file:{file_identity(path)}" if path.is_file() else f"path:{value}"
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(value).data).hexdigest()[:16]
        return f"array{value.shape}{value.dtype}:{digest}"
    # lists, tuples, dicts and sets, and OmegaConf's ListConfig / DictConfig from Hydra
    if isinstance(value, Sequence):
        inner = ", ".join(_value_key(v, f"{where}[{k}]") for k, v in enumerate(value))
        return f"[{inner}]"
    if isinstance(value, Set):
        return "{" + ", ".join(sorted(_value_key(v, where) for v in value)) + "}"
    if isinstance(value, Mapping):
        items = sorted((repr(k), _value_key(v, f"{where}[{k!r}]")) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if type(value).__module__ == "torch" and type(value).__name__ == "device":
        return f"device:{value.type}"  # outputs differ by device type, not by GPU index
    if callable(getattr(value, "cache_key", None)):
        return f"<{value.cache_key()}>"
    raise CacheKeyError(
        f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which is not a "
        "setting frontal_exp can put in a cache key. If it is runtime state (a loaded model, a "
        "lock, a counter), name it in the class's `runtime_attrs`; if it changes results, store "
        "the setting it comes from (a number, a string, the model file's Path) instead."
    )


def settings_key(obj: object) -> str:
    """Every attribute of `obj` (private ones too) but its `runtime_attrs`, canonically."""
    skip = _runtime_attrs(obj)
    name = type(obj).__qualname__
    parts = [f"{k}={_value_key(v, f'{name}.{k}')}"
             for k, v in sorted(vars(obj).items()) if k not in skip]
    return f"{type(obj).__module__}.{name}(" + ", ".join(parts) + ")"


def component_key(obj: object) -> str:
    """The cache key of a component: its name, code fingerprint and settings. It changes
    whenever the output for the same input could change."""
    name = getattr(obj, "name", type(obj).__name__)
    return f"{name}|code {code_fingerprint(obj)}|{settings_key(obj)}"


def clear_caches() -> None:
    """Forget the fingerprints computed in this process (tests that edit sources use it)."""
    for cached in (_closure, _code_fingerprint, _content_hash, package_version):
        cached.cache_clear()
