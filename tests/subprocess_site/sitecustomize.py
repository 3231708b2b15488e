"""Loaded at start-up by every Python process the tests start (conftest puts this folder first on
PYTHONPATH): the warning filters of pyproject.toml's pytest settings, applied as pytest applies
them in its own process, so that a DeprecationWarning raised from petvision's code fails a stage
run in a subprocess (``python -m petvision.<stage>``, ``dvc repro``) as it fails a test.
``PYTHONWARNINGS`` cannot say this: it matches a module's whole name, not a package prefix.
And, where conftest asks for it, no JAX for a process on TensorFlow (below)."""

from __future__ import annotations

import builtins
import os
import sys
import tomllib
import warnings
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _apply(entry: str) -> None:
    """One ``action:message:category:module:lineno`` filter, as pytest's ini ``filterwarnings``
    reads it: message and module are regular expressions, the module matched from its start."""
    action, message, category, module, lineno = (
        part.strip() for part in (entry.split(":") + [""] * 5)[:5]
    )
    found = getattr(builtins, category or "Warning", None)
    if not (isinstance(found, type) and issubclass(found, Warning)):
        # Only built-in categories: importing a library at every interpreter start would slow
        # and entangle every subprocess of the tests.
        raise ValueError(f"{_PYPROJECT}: filterwarnings {entry!r}: not a built-in warning class")
    warnings.filterwarnings(action, message, found, module, int(lineno) if lineno else 0)


for _entry in tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["tool"]["pytest"][
    "ini_options"
]["filterwarnings"]:
    _apply(_entry)


# TensorFlow's TF Lite and Keras's Orbax callback each import JAX at start-up when it is installed
# (optional bridges this project never uses): 0.7 CPU-s of every TensorFlow process's start-up,
# and the tests start some seventy. Where conftest.py asks for it (for every process the tests
# start), a process on TensorFlow finds no JAX, as after `make install-run` (whose lock has none);
# a process on Keras's JAX backend is left alone, and the test processes lift it (conftest.py).
if (
    os.environ.get("PETVISION_TESTS_JAX") == "absent"
    and os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
):
    sys.modules["jax"] = None  # `import jax` fails with ImportError; find_spec("jax") is None
