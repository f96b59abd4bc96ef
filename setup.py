"""Build step: the compiled parts, pure Python wherever they cannot be built.

Everything declarative lives in pyproject.toml; this file only adds two kinds
of extension:

* the rule engine (``rules/``) is fully typed (mypy --strict), so mypyc turns
  it into C extensions that run the same source ~1.3x faster per event
  (bench/engine.py);
* the agent's envelope (``agent/_envelope.c``) wraps a CloudTrail document's
  records as wodle messages straight from its bytes; ``agent/envelope.py`` is
  its reference and takes over per record wherever it is absent.

The ``.py`` files ship beside the extensions and are what Python imports
wherever no extension was built, so every way of installing still works:

* ``TRAILWARDEN_PURE_PYTHON=1`` skips compilation (debugging, profiling);
* no mypyc in the build environment, a type error mypyc rejects, or a failed
  C build each fall back to the pure modules with a warning, never a failed
  install.

Developers: ``make`` rebuilds the extensions when a ``rules/*.py`` changes;
``pytest`` refuses to run against extensions older than their sources.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
# The compiled package and the name its shared runtime library gets (a module
# inside the package, so nothing lands at the top level of site-packages).
COMPILED_PACKAGE = ("trailwarden.rules", "rules")
GROUP_NAME = "trailwarden.rules._native"
# Not compiled: the package marker (importing the package must not need C) and
# the offline table builder (a tool run with python -m, not a per-event path).
NOT_COMPILED = {"__init__.py", "mitre_build.py"}


def _warn(message: str) -> None:
    print(f"trailwarden build: {message}; installing the pure-Python rule engine",
          file=sys.stderr)


def c_extensions() -> list[Extension]:
    if os.environ.get("TRAILWARDEN_PURE_PYTHON"):
        return []
    # optional: without a C compiler the install goes on, envelope.py alone.
    return [Extension("trailwarden.agent._envelope", ["agent/_envelope.c"], optional=True)]


def compiled_extensions() -> list[Extension]:
    if os.environ.get("TRAILWARDEN_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not installed")
        return []
    package, folder = COMPILED_PACKAGE
    # mypy names a module after the folders above it, and the code folders
    # become trailwarden.* only through package-dir; a tree of links spells
    # the installed names so the modules compile under them.
    names = ROOT / "build" / "mypyc-names"
    link = names.joinpath(*package.split("."))
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(ROOT / folder, target_is_directory=True)
    sources = sorted(str(link / path.name) for path in (ROOT / folder).glob("*.py")
                     if path.name not in NOT_COMPILED)
    os.environ["MYPYPATH"] = str(names)
    try:
        extensions: list[Extension] = mypycify(
            ["--config-file", str(ROOT / "pyproject.toml"), "--explicit-package-bases",
             *sources],
            opt_level="3",
            group_name=GROUP_NAME,
            target_dir=str(ROOT / "build" / "mypyc"),
        )
    # Whatever stops mypyc (it reports type errors by exiting) leaves the pure
    # modules, which are complete on their own.
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        _warn(f"mypyc could not compile {folder}/ ({exc!r})")
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: pure modules instead
    return extensions


setup(ext_modules=compiled_extensions() + c_extensions())
