"""A throwaway copy of the project, as a user's clone would be, for the pipeline-level tests.

:func:`make_project` copies what git would give a user (tracked files, plus untracked files git
does not ignore, so work in progress is tested too) into a new git repository, with a tiny
experiment overlay made its default, and composes params.yaml from that conf/ the way
``make params`` does. The tiny settings live in conf/, not only in params.yaml, because
``dvc exp run -S`` recomposes params.yaml from conf/: overrides given only to the composition
would be lost by the first experiment.

:func:`shared_repro_project` runs the tiny pipeline once per test session, whichever test modules
ask for it; tests that change a project work on :func:`copy_project` copies of it.

Everything the pipeline writes (data, models, reports, the MLflow store, the DVC cache and the
default remote ``../petvision-dvc-storage``) then lies in the copy or beside it, under tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SUBPROCESS_SITE

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# A pipeline that runs in about a minute on two cores: every stage, every output, tiny sizes.
TINY_OVERLAY = {
    "preset": "tiny",
    "data": {
        "synthetic": {"num_images": 60, "min_side": 64, "max_side": 96},
        "segmentation": {"image_size": 32, "val_count": 10},
        "classification": {"image_size": 32, "train_count": 24, "val_count": 10, "test_count": 10},
    },
    "segmentation": {"train": {"epochs": 1, "batch_size": 16}},
    "classification": {"train": {"epochs": 1, "batch_size": 16}},
    "visualize": {
        "num_images": 2,
        "activations": {"images_per_row": 4},
        "filters": {"num_filters": 2, "steps": 2},
        "gradcam": {"localization_images": 4},
        "segmentation": {"worst": 2},
    },
}


def tiny_overrides() -> list[str]:
    """TINY_OVERLAY as Hydra overrides, for running one stage on the command line."""

    def walk(tree: dict, prefix: str = ""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}={value}"

    return list(walk(TINY_OVERLAY))


def env(**extra: str) -> dict[str, str]:
    """The environment a user has after ``make install``: the venv first on PATH (dvc.yaml's
    commands call ``python``), no tracking server chosen, quiet TensorFlow."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PETVISION_ROOT") and not k.startswith("DVC_")
    }
    base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    base["DVC_NO_ANALYTICS"] = "1"
    if "PYTHONPATH" in extra and base.get("PYTHONPATH"):
        # In front of, not instead of, the tests' own (conftest.SUBPROCESS_SITE: warning filters).
        extra = {**extra, "PYTHONPATH": os.pathsep.join([extra["PYTHONPATH"], base["PYTHONPATH"]])}
    return {**base, **extra}


def run(
    args: list[str],
    cwd: Path,
    timeout: float = 600,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would in ``cwd``; on failure (``check``) raise with its output."""
    done = subprocess.run(
        args, cwd=cwd, env=env(**(extra_env or {})), capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode} in {cwd}\n"
            f"--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
        )
    return done


def dvc(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run([str(VENV_BIN / "dvc"), *args], cwd=project, **kwargs)


def git(project: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], cwd=project, **kwargs)


def project_files(root: Path = ROOT) -> list[str]:
    """What a clone of the working tree holds: tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def make_project(dest: Path, overlay: dict | None = None, commit: bool = True) -> Path:
    """A git repository at ``dest`` holding the project with ``overlay`` (default: the tiny one)
    as its default experiment preset and params.yaml composed from it; committed if ``commit``."""
    dest.mkdir(parents=True)
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    set_default_experiment(dest, overlay if overlay is not None else TINY_OVERLAY)
    # dvc.yaml's commands set PYTHONPATH=src, which drops the tests' own (conftest): a
    # sitecustomize there gives the stages dvc runs the tests' warning filters all the same.
    (dest / "src" / "sitecustomize.py").write_text(
        f"import runpy\n\nrunpy.run_path({str(SUBPROCESS_SITE / 'sitecustomize.py')!r})\n"
    )
    compose_params(dest)
    git(dest, "init", "--quiet", "--initial-branch=main")
    if commit:
        git(dest, "add", "--all")
        git(dest, "commit", "--quiet", "-m", "project copy for tests")
    return dest


def set_default_experiment(project: Path, overlay: dict, name: str = "tiny") -> None:
    """Write ``overlay`` as conf/experiment/<name>.yaml and make it the default preset."""
    text = "# @package _global_\n" + yaml.safe_dump(overlay, sort_keys=False)
    (project / "conf" / "experiment" / f"{name}.yaml").write_text(text)
    config_yaml = project / "conf" / "config.yaml"
    lines = config_yaml.read_text().splitlines(keepends=True)
    replaced = [
        f"  - experiment: {name}\n" if line.strip().startswith("- experiment:") else line
        for line in lines
    ]
    assert replaced != lines, f"{config_yaml} has no '- experiment:' default to replace"
    config_yaml.write_text("".join(replaced))


def compose_params(project: Path, *overrides: str) -> None:
    """``make params``: recompose params.yaml from the copy's conf/ (DVC's own composition)."""
    run([sys.executable, "scripts/compose_params.py", "params.yaml", *overrides], cwd=project)


def load_params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def declared_outputs(project: Path) -> dict[str, list[Path]]:
    """Every output, metric and plot file dvc.yaml declares, per stage, resolved."""
    return {name: outs for name, (_, outs) in stage_paths(project).items()}


def interpolate(text: str, params: dict) -> str:
    """dvc.yaml's ``${a.b}`` templating, for the plain keys this project uses."""

    def value(match: re.Match) -> str:
        node = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def stage_names(project: Path = ROOT) -> list[str]:
    return list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])


def mlflow_runs(project: Path, filter_string: str = "") -> list:
    """Every run in the copy's own MLflow store (``mlflow.db`` in its root), all experiments."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=filter_string, max_results=1000)


def copy_project(source: Path, dest: Path, keep_tracking: bool = False) -> Path:
    """A copy of a whole working project (git history, DVC cache, outputs), as if another folder
    held the same checkout. Its MLflow store starts empty unless ``keep_tracking``: a copied store
    would keep filing artifacts under the source's mlruns/."""
    ignore = None if keep_tracking else shutil.ignore_patterns("mlflow.db", "mlruns")
    shutil.copytree(source, dest, symlinks=True, ignore=ignore)
    return dest


def ran_stages(output: str) -> list[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` actually ran, from its output."""
    return re.findall(r"^Running stage '([^']+)':", output, flags=re.MULTILINE)


def stage_paths(project: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """``{stage: (deps, outputs)}`` from dvc.yaml, resolved against params.yaml."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    params = load_params(project)
    result = {}
    for name, stage in stages.items():
        deps = [project / interpolate(d, params) for d in stage.get("deps", [])]
        outs = [
            project / interpolate(next(iter(o)) if isinstance(o, dict) else o, params)
            for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind, [])
        ]
        result[name] = (deps, outs)
    return result


def downstream(project: Path, changed: str) -> set[str]:
    """``changed`` and every stage that depends on its outputs, directly or not, per dvc.yaml."""
    graph = stage_paths(project)

    def feeds(a: str, b: str) -> bool:
        return any(
            dep == out or out in dep.parents or dep in out.parents
            for out in graph[a][1]
            for dep in graph[b][0]
        )

    found, frontier = {changed}, [changed]
    while frontier:
        current = frontier.pop()
        for other in graph:
            if other not in found and feeds(current, other):
                found.add(other)
                frontier.append(other)
    return found


# Stages that open an MLflow run, and the MLflow experiment (tracking.experiments.<task>) it goes to.
TRACKED_STAGES = {
    "train_segmentation": "segmentation",
    "train_xception": "classification",
    "visualize": "interpretation",
}


def tracked_stages(project: Path) -> dict[str, str]:
    """The stages of dvc.yaml that log to MLflow, with their task."""
    return {s: task for s, task in TRACKED_STAGES.items() if s in stage_names(project)}


_SHARED: dict[str, Path] = {}


def shared_repro_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project after ``dvc repro``, its results committed, made once per test session
    (a session fixture in each test module calls this). Read-only for tests: copy it
    (:func:`copy_project`) before changing anything."""
    if "project" not in _SHARED:
        project = make_project(tmp_path_factory.mktemp("team") / "project")
        dvc(project, "repro", timeout=900)
        git(project, "add", "--all")
        git(project, "commit", "--quiet", "-m", "dvc repro")
        _SHARED["project"] = project
    return _SHARED["project"]
