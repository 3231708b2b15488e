"""The import layering of docs/architecture.md, checked from the source (``make lint`` runs this).

petvision's packages stand in layers, top first. A module may import from the layers below its
own, never from its own layer's other packages nor from above: the stages are what nothing
imports, and ``core`` and ``util`` import nothing of petvision. A new package fails
:func:`test_every_package_has_a_layer` until it is placed here and in the doc. Imports inside
functions count as much as those at the top (:mod:`project_imports`).
"""

from __future__ import annotations

import ast

from project_imports import SRC, imports, module_file, module_name, parse

# Top first; the packages (or stage modules) of one layer are independent of each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    # python -m petvision.<name>: the five stages of dvc.yaml and the two commands
    (
        "download",
        "preprocess",
        "train_segmentation",
        "train_xception",
        "visualize",
        "predict",
        "export",
    ),
    ("cli",),  # a module as a Hydra app
    ("inference",),  # the trained models on photos: predict, export, serving
    ("training", "interpret"),  # what the training stages share; what the visualize stage draws
    ("tracking",),  # MLflow
    ("models",),  # the architectures' builders
    ("data", "evaluation", "render", "search"),  # the dataset; metrics; pictures; trial hooks
    ("config",),  # the configuration, its checks, the task view, the architectures table
    ("core", "util"),  # paths, errors, atomic writes, the Task enum; generic helpers
)
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}
PACKAGE = SRC / "petvision"


def _unit(module: str) -> str | None:
    """The package or stage module of petvision that ``module`` belongs to (None: the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "petvision" else None


def _files():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer():
    units = {_unit(module_name(f)) for f in _files()} - {None}
    assert units == set(RANK), f"not in LAYERS: {sorted(units - set(RANK))}"


def test_imports_go_down_the_layers():
    wrong = []
    for path in _files():
        here = _unit(module_name(path))
        if here is None:
            continue
        for imp in imports(path):
            targets = {_unit(imp.module)} | {
                _unit(f"{imp.module}.{n}") for n in imp.names if module_file(f"{imp.module}.{n}")
            }
            for there in targets - {None, here}:
                if RANK[there] <= RANK[here]:
                    why = "same layer" if RANK[there] == RANK[here] else "a higher layer"
                    wrong.append(f"{path.relative_to(SRC)}:{imp.line} imports {there} ({why})")
    assert not wrong, "\n".join(wrong)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_takes_another_modules_private_names():
    """``from petvision.x import _y`` or ``x._y`` on an imported project module: what is shared
    is public, or lives where it is used."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        tree = parse(path)
        bound: set[str] = set()  # local names of imported project modules
        for imp in imports(path):
            taken = [n for n in imp.names if _private(n)]
            wrong += [f"{path.relative_to(SRC)}:{imp.line} imports {imp.module}.{n}" for n in taken]
            bound |= {n for n in imp.names if module_file(f"{imp.module}.{n}")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound |= {
                    a.asname for a in node.names if a.asname and a.name.startswith("petvision.")
                }
            elif isinstance(node, ast.ImportFrom) and node.module:
                bound |= {
                    a.asname
                    for a in node.names
                    if a.asname and module_file(f"{node.module}.{a.name}")
                }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
            ):
                wrong.append(
                    f"{path.relative_to(SRC)}:{node.lineno} uses {node.value.id}.{node.attr}"
                )
    assert not wrong, "\n".join(wrong)
