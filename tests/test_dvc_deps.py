"""dvc.yaml's deps are the code each stage runs, so an edit reruns the stages it affects and no
other.

A stage's code is its module (``python -m petvision.<stage>`` in its ``cmd``) and every project
module it imports, directly or through others, at the top or inside a function
(:mod:`project_imports`). Each of those files must lie at or under one of the stage's ``deps``;
the deps are the stage's module, ``src/petvision/__init__.py`` and whole packages, and each of
them holds code the stage runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from project_imports import ROOT, SRC, module_file, stage_code


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if isinstance(d, str) and d.startswith("src/")]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def _module(stage: dict) -> str:
    return re.search(r"python -m ([\w.]+)", stage["cmd"]).group(1)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_a_stage_depends_on_every_project_module_it_imports(name):
    stage = _stages()[name]
    module = _module(stage)
    deps = _code_deps(stage)
    code = stage_code(module)
    assert module_file(module) in code
    missing = sorted(str(p.relative_to(ROOT)) for p in code if not _covered(p, deps))
    assert not missing, f"stage {name}: dvc.yaml deps do not cover {missing}"


@pytest.mark.parametrize("name", sorted(_stages()))
def test_a_stage_depends_on_its_module_and_whole_packages_it_imports(name):
    """No single file of a package (a package's other modules would then change unseen the day
    the stage imports them), and nothing the stage does not run (an edit there would rerun it
    for nothing)."""
    stage = _stages()[name]
    module_path = str(module_file(_module(stage)).relative_to(ROOT))
    code = stage_code(_module(stage))
    for dep in _code_deps(stage):
        if dep not in (module_path, "src/petvision/__init__.py"):
            assert (ROOT / dep).is_dir(), f"stage {name}: {dep} is a file, not a package"
        assert any(_covered(p, [dep]) for p in code), f"stage {name}: runs nothing in {dep}"


def test_the_import_walk_sees_imports_inside_functions():
    # download imports the generator only when data.source=synthetic: it still counts.
    code = stage_code("petvision.download")
    assert SRC / "petvision" / "data" / "synthetic" / "__init__.py" in code
