"""The photos a user names: files, folders or lists of them, decoded by the training data's
loader, and the output names they get."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petvision.core.errors import ConfigError
from petvision.data import images

log = logging.getLogger("petvision.inference")


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    files: list[Path] = field(default_factory=list)  # in the order given; folders expanded, sorted
    ignored: list[Path] = field(
        default_factory=list
    )  # hidden files (.*, ._* AppleDouble) in folders


def collect_inputs(spec: str | float | Sequence[str], cwd: Path | None = None) -> Inputs:
    """The files named by ``predict.input``: photos as given, folders' files (not subfolders),
    sorted. A path that does not exist is a ConfigError naming it."""
    given = [str(g) for g in ([spec] if isinstance(spec, (str, int, float)) else spec)]
    given = [g for g in given if g.strip()]
    if not given:
        raise ConfigError(
            "predict.input='': name a photo, a folder of photos, or a list of them "
            "(predict.input=photos/ or predict.input=[a.jpg,b.png])"
        )
    found = Inputs()
    seen: set[Path] = set()
    for item in given:
        path = Path(item).expanduser()
        path = path if path.is_absolute() else (cwd or Path.cwd()) / path
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if not entry.is_file():
                    continue
                if entry.name.startswith("."):
                    found.ignored.append(entry)
                elif entry.resolve() not in seen:
                    seen.add(entry.resolve())
                    found.files.append(entry)
        elif path.is_file():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.files.append(path)
        else:
            raise ConfigError(f"predict.input: {item} does not exist")
    return found


def output_names(files: Sequence[Path]) -> list[str]:
    """A distinct, file-system-safe base name per input: its stem, with its suffix added when two
    inputs share a stem (a.jpg and a.png), and a number when they still collide (two folders)."""
    stems = [f.stem or f.name for f in files]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names, used = [], set()
    for f, s in zip(files, stems):
        name = s if counts[s] == 1 else f"{s}_{f.suffix.lstrip('.').lower() or 'file'}"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def read_photo(path: Path) -> tuple[np.ndarray, str]:
    """The photo as uint8 RGB and how it was decoded (``jpeg``, ``png+rgba``...): the training
    data's loader. DataError names the file if it cannot be decoded."""
    return images.load_rgb(path)
