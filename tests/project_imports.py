"""What imports what inside petvision, read from the source (no module is imported): the walk
behind dvc.yaml's deps check (test_dvc_deps.py) and the layering check (test_layering.py).

Every import counts, at the top of a module or inside a function: ``import petvision.x``,
``from petvision.x import y`` (where ``y`` may itself be a module) and relative imports; a
module's parent packages count too, since importing it runs their ``__init__``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@dataclass(frozen=True)
class Import:
    module: str  # the dotted name of a project module (package or file)
    line: int
    names: tuple[str, ...] = ()  # what ``from module import ...`` takes from it


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def parse(path: Path) -> ast.Module:
    """``path``'s syntax tree. Python 3.11 keeps the AST constructor's recursion counter per
    interpreter, not per thread, so another thread building an AST at the same moment (a thread a
    test left running, formatting a traceback) can fail this one with "AST constructor recursion
    depth mismatch" (CPython gh-106905; seen once in CI's worker processes). The source did not
    change: parse it again."""
    source = path.read_text()
    try:
        return ast.parse(source, str(path))
    except SystemError as error:
        if "recursion depth mismatch" not in str(error):
            raise
    return ast.parse(source, str(path))


def imports(path: Path) -> list[Import]:
    """The project imports written in one file, as written (parents not added)."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: list[Import] = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            found += [
                Import(a.name, node.lineno)
                for a in node.names
                if a.name.split(".")[0] == "petvision"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.split(".")[0] == "petvision":
                found.append(Import(module, node.lineno, tuple(a.name for a in node.names)))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every project module that importing ``path`` runs: what it imports, the names taken from
    a package that are modules themselves, and their parent packages."""
    found: set[str] = set()
    for imp in imports(path):
        found.add(imp.module)
        found.update(f"{imp.module}.{name}" for name in imp.names)
    with_parents = set()
    for name in found:
        parts = name.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in with_parents if module_file(name)}


def stage_code(module: str) -> set[Path]:
    """Every project file that ``python -m <module>`` may import."""
    seen: set[str] = set()
    todo = [module, *(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is not None:
            todo.extend(imported_modules(path) - seen)
    return {p for p in (module_file(n) for n in seen) if p is not None}
