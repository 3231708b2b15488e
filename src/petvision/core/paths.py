"""Where things are: the project root, and paths from the configuration resolved against it.

Two roots matter and they differ only inside DVC experiments:

* the *project root* is the checkout a stage runs in. Outputs go here, because DVC collects a
  stage's outputs from its own checkout, which for ``dvc exp run --temp`` / ``--queue`` is a
  temporary copy under ``.dvc/tmp/exps/``;
* the *tracking root* holds the local MLflow store. DVC sets ``DVC_ROOT`` to the user's own
  workspace even for temporary and queued experiments, so every run lands in one store instead
  of a copy that is deleted when the experiment ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from petvision.core.errors import ConfigError

ROOT_ENV = "PETVISION_ROOT"
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[3]  # src/petvision/core/paths.py


def _is_project(folder: Path) -> bool:
    return (folder / "dvc.yaml").is_file() and (folder / "conf" / "config.yaml").is_file()


def project_root() -> Path:
    """The project checkout: $PETVISION_ROOT, else the nearest folder at or above the working
    directory holding dvc.yaml and conf/, else the checkout this package was installed from."""
    explicit = os.environ.get(ROOT_ENV)
    if explicit:
        root = Path(explicit).resolve()
        if not _is_project(root):
            raise ConfigError(
                f"{ROOT_ENV}={explicit} is not a petvision project (no dvc.yaml and conf/config.yaml there)"
            )
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if _is_project(folder):
            return folder
    if _is_project(_SOURCE_CHECKOUT):
        return _SOURCE_CHECKOUT
    raise ConfigError(
        f"no petvision project found at or above {here}: run from the checkout or set {ROOT_ENV}"
    )


def tracking_root() -> Path:
    """Where the local MLflow store lives: the workspace DVC names in $DVC_ROOT, else the project root."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and Path(dvc_root).is_dir():
        return Path(dvc_root).resolve()
    return project_root()


def conf_dir() -> Path:
    return project_root() / "conf"


def resolve(path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """A configured path, made absolute against the project root (or ``root``)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or project_root()) / p
