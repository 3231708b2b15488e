"""No function in src/ over 60 lines or 8 parameters (`make lint` runs this): past that, a
function is doing several things or passing values on that belong together in one object (a
config section, a small dataclass, a NamedTuple). A function's lines are its body's, docstring
left out; ``self`` and ``cls`` are not counted as parameters."""

from __future__ import annotations

import ast
from pathlib import Path

from project_imports import parse

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES, MAX_PARAMETERS = 60, 8


def function_sizes(path: Path):
    """``(name, line, body lines, parameters)`` of every function and method in ``path``."""
    for node in ast.walk(parse(path)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        args = node.args
        parameters = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        named = [p for p in parameters if p is not None]
        if named and named[0].arg in ("self", "cls"):
            named = named[1:]
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:] or body  # a docstring is not code
        lines = (node.end_lineno or node.lineno) - body[0].lineno + 1
        yield node.name, node.lineno, lines, len(named)


def test_no_function_in_src_is_over_60_lines_or_8_parameters():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name}: {lines} lines, {count} parameters"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for name, line, lines, count in function_sizes(path)
        if lines > MAX_LINES or count > MAX_PARAMETERS
    ]
    assert not offenders, "\n".join(offenders)


def test_the_measure_counts_what_it_names(tmp_path):
    """A function of 61 body lines and one of 9 parameters are caught; 60 and 8 pass."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = (
        f'def ok(a, b, c, d, e, f, g, h):\n    """Doc."""\n{body}\n'
        f"def long(a):\n{body}\n    return a\n"
        "class C:\n    def wide(self, a, b, c, d, e, f, g, h, *rest):\n        pass\n"
    )
    path = tmp_path / "m.py"
    path.write_text(source)
    sizes = {name: (lines, count) for name, _, lines, count in function_sizes(path)}
    assert sizes == {"ok": (60, 8), "long": (61, 1), "wide": (1, 9)}
