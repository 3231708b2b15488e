"""The runtime part of requirements.lock: what ``petvision[cpu]`` needs, pinned as the lock pins it.

``make run`` installs only this (requirements-run.lock); ``make install`` and the test targets
install the whole lock. The packages are found by walking the Requires-Dist metadata of the
environment the whole lock was installed into (``make lock`` runs this in its resolution venv,
the tests in .venv), and the lines are copied from requirements.lock itself, so the two files come
from one resolution and cannot pin one package differently.

Usage: python scripts/runtime_lock.py [FULL_LOCK] > requirements-run.lock
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ROOT_REQUIREMENT = "petvision[cpu]"
# `pip freeze`, which writes the full lock, leaves these out; the venv (setuptools) or the installer
# (wheel) supplies them, for both installs alike.
NOT_PINNED = frozenset({"pip", "setuptools", "wheel", "distribute"})
HEADER = (
    "# What `make run` needs (petvision[cpu]), pinned as in requirements.lock, which it is cut\n"
    "# from. Rebuild both with: make lock\n"
)


def needed(root: str = ROOT_REQUIREMENT) -> set[str]:
    """Canonical names of every distribution ``root`` needs in this environment (itself excluded),
    following extras and evaluating markers for this interpreter."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    pending = [Requirement(root)]
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"error: {req.name} (needed by {root}) is not installed in {sys.prefix}: "
                "install the whole lock there first"
            ) from None
        for line in dist.requires or []:
            dep = Requirement(line)
            # A dependency counts if its marker holds with no extra or with one asked for.
            extras = [""] + sorted(req.extras)
            if dep.marker is None or any(
                dep.marker.evaluate({**default_environment(), "extra": e}) for e in extras
            ):
                pending.append(dep)
    names.discard(canonicalize_name(Requirement(root).name))
    return names - NOT_PINNED


def pins(lock_text: str) -> dict[str, str]:
    """Canonical name -> the lock's line for it (``name==version``)."""
    out: dict[str, str] = {}
    for raw in lock_text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out[canonicalize_name(Requirement(line).name)] = line
    return out


def runtime_lock(full_lock: str, root: str = ROOT_REQUIREMENT) -> str:
    """The text of the runtime lock cut from ``full_lock``'s text."""
    full = pins(full_lock)
    names = needed(root)
    missing = sorted(names - full.keys())
    if missing:
        raise SystemExit(f"error: {root} needs {', '.join(missing)}, not pinned in the full lock")
    return HEADER + "".join(f"{full[n]}\n" for n in sorted(names, key=lambda n: full[n].lower()))


if __name__ == "__main__":
    lock = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "requirements.lock"
    sys.stdout.write(runtime_lock(lock.read_text()))
