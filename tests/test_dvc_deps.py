"""dvc.yaml's deps cover the code each stage runs, so an edit reruns the stages it affects.

A stage's code is its module (``python -m petvision.<stage>`` in its ``cmd``) and every project
module it imports, directly or through others, at the top or inside a function. Each of those
files must lie at or under one of the stage's ``deps``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Project modules a file imports: ``import petvision.x``, ``from petvision.x import y`` (where
    ``y`` may itself be a module) and relative imports."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "petvision")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.split(".")[0] != "petvision":
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    # a module's parent packages run their __init__ on import
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in with_parents if _module_file(name)}


def stage_code(module: str) -> set[Path]:
    """Every project file that ``python -m <module>`` may import."""
    seen: set[str] = set()
    todo = [module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is not None:
            todo.extend(_imported_modules(path) - seen)
    return {p for p in (_module_file(n) for n in seen) if p is not None}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(_stages()))
def test_a_stage_depends_on_every_project_module_it_imports(name):
    stage = _stages()[name]
    module = re.search(r"python -m ([\w.]+)", stage["cmd"]).group(1)
    deps = [d for d in stage["deps"] if isinstance(d, str) and not d.startswith("${")]
    code = stage_code(module)
    assert _module_file(module) in code
    missing = sorted(str(p.relative_to(ROOT)) for p in code if not _covered(p, deps))
    assert not missing, f"stage {name}: dvc.yaml deps do not cover {missing}"


def test_the_import_walk_sees_imports_inside_functions():
    # download imports the generator only when data.source=synthetic: it still counts.
    code = stage_code("petvision.download")
    assert SRC / "petvision" / "data" / "synthetic" / "__init__.py" in code
