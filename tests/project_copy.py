"""A throwaway copy of the project, as a user's clone would be, for the pipeline-level tests.

:func:`make_project` copies what git would give a user (tracked files, plus untracked files git
does not ignore, so work in progress is tested too) into a new git repository, with a preset of
conf/experiment/ (tiny unless told) made its default, and composes params.yaml from that conf/
the way ``make params`` does. The default preset is changed in conf/, not only in params.yaml,
because ``dvc exp run -S`` recomposes params.yaml from conf/: overrides given only to the
composition would be lost by the first experiment.

:func:`shared_repro_project` runs the tiny pipeline once per test session, whichever worker
asks first (conftest.py's ``repro_project`` fixture), in the session's shared folder; tests that
change a project work on :func:`copy_project` copies of it under their tmp_path.

Everything the pipeline writes (data, models, reports, the MLflow store, the DVC cache and the
default remote ``../petvision-dvc-storage``) then lies in the copy or beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import SUBPROCESS_SITE

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# conf/experiment/tiny.yaml: every stage, every output, tiny sizes, in about a minute on two cores.
TINY = "tiny"


def tiny_overrides() -> list[str]:
    """The tiny preset as one Hydra override, for composing a configuration in a test."""
    return [f"experiment={TINY}"]


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


def make_project(
    dest: Path, experiment: str = TINY, overlay: dict | None = None, commit: bool = True
) -> Path:
    """A git repository at ``dest`` holding the project with conf/experiment/<experiment>.yaml as
    its default preset (``overlay``, when given, written there first) and params.yaml composed
    from it; committed if ``commit``."""
    dest.mkdir(parents=True)
    for name in project_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    if overlay is not None:
        write_experiment(dest, experiment, overlay)
    set_default_experiment(dest, experiment)
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


def write_experiment(project: Path, name: str, overlay: dict) -> None:
    """``overlay`` as conf/experiment/<name>.yaml of ``project``."""
    text = "# @package _global_\n" + yaml.safe_dump(overlay, sort_keys=False)
    (project / "conf" / "experiment" / f"{name}.yaml").write_text(text)


def set_default_experiment(project: Path, name: str) -> None:
    """Make conf/experiment/<name>.yaml the preset conf/config.yaml composes by default."""
    config_yaml = project / "conf" / "config.yaml"
    lines = config_yaml.read_text().splitlines(keepends=True)
    replaced = [
        f"  - experiment: {name}\n" if line.strip().startswith("- experiment:") else line
        for line in lines
    ]
    assert any(line.strip() == f"- experiment: {name}" for line in replaced), (
        f"{config_yaml} has no '- experiment:' default to replace"
    )
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


def shared_repro_project() -> Path:
    """The tiny project after the README's one-minute run, made once per test session, by
    whichever worker process asks first (conftest.py's ``repro_project`` fixture calls this).
    Read-only for tests: copy it (:func:`copy_project`) before changing anything.

    It is made as a user makes it: a fresh clone with the default preset, then ``dvc exp run -S
    experiment=tiny`` (``make run EXPERIMENT=tiny``); its output is :func:`shared_repro_output`.
    Then tiny is made the copy's default preset, which composes the same params.yaml, and the
    results are committed: ``dvc exp run -S`` in a test then changes a tiny pipeline, not the
    quick one."""
    from conftest import session_dir, session_lock

    folder = session_dir() / "team"
    project = folder / "project"
    with session_lock("team"):
        if not (folder / "output.txt").exists():
            make_project(project, experiment="quick")
            done = dvc(project, "exp", "run", "-S", f"experiment={TINY}", timeout=900)
            composed = load_params(project)
            set_default_experiment(project, TINY)
            compose_params(project)
            assert load_params(project) == composed, "tiny as the default composes other params"
            git(project, "add", "--all")
            git(project, "commit", "--quiet", "-m", "dvc exp run -S experiment=tiny")
            (folder / "output.txt").write_text(done.stdout)
    return project


def shared_repro_output() -> str:
    """What ``dvc exp run -S experiment=tiny`` printed when :func:`shared_repro_project` was made."""
    return (shared_repro_project() / ".." / "output.txt").read_text()
