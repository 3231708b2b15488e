"""The end of a search: Optuna's pictures, the best trial on the search's MLflow run, and the
best trial as the ``dvc exp run`` command that makes it a pipeline experiment."""

from __future__ import annotations

import logging
import re
import shlex
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .study import (
    OVERRIDES_ATTR,
    RUN_ATTR,
    SEARCH_GROUP,
    Space,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- report


def dvc_command(best: Any, study_name: str) -> str:
    """The command that turns ``best`` (a FrozenTrial) into a DVC experiment of the whole
    pipeline: its overrides (the search's own group aside) as ``-S`` values."""
    overrides = [
        o
        for o in best.user_attrs.get(OVERRIDES_ATTR, [])
        if not re.match(rf"[+~]*{SEARCH_GROUP}(=|$)", o) and not o.startswith("hydra.")
    ]
    name = re.sub(r"[^\w\-]+", "-", f"{study_name}-trial-{best.number}").strip("-")
    return " ".join(
        ["dvc exp run -n", shlex.quote(name), *(f"-S {shlex.quote(o)}" for o in overrides)]
    )


def draw_pictures(study: Any, folder: Path) -> list[Path]:
    """Optuna's own pictures of the study (matplotlib backend), as PNG files in ``folder``.
    A picture that the study cannot give yet (too few trials) is left out, with a log line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from optuna.visualization import matplotlib as ov

    wanted: dict[str, Callable[[Any], Any]] = {
        "optimization_history": ov.plot_optimization_history,
        "param_importances": ov.plot_param_importances,
        "slice": ov.plot_slice,
        "intermediate_values": ov.plot_intermediate_values,
        "timeline": ov.plot_timeline,
    }
    drawn = []
    chatty = logging.getLogger("matplotlib")
    level = chatty.level
    chatty.setLevel(logging.WARNING)  # "Using categorical units..." for every categorical param
    try:
        for name, plot in wanted.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the matplotlib backend is "experimental"
                    axes = plot(study)
                    figure = np.ravel(axes)[0].figure
                    width, height = figure.get_size_inches()
                    figure.set_size_inches(max(width, 8), max(height, 5))
                    figure.tight_layout()
                path = folder / f"{name}.png"
                figure.savefig(path, dpi=100)
                plt.close(figure)
                drawn.append(path)
            except Exception as exc:  # a picture must not fail the search
                log.info(
                    "search picture %s left out: %s",
                    name,
                    str(exc).splitlines()[0] if str(exc) else exc,
                )
    finally:
        chatty.setLevel(level)
    return drawn


def report(study: Any, parent: Any, sweep_dir: Path) -> str | None:
    """At a worker's end: the study's best trial (of every worker's trials) into the search's
    run and ``<sweep dir>/best_trial.yaml``, Optuna's pictures as the run's artifacts, and the
    ``dvc exp run`` command printed and logged. Returns that command (None: no complete trial)."""
    import yaml
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {
        state.name.lower(): sum(t.state == state for t in trials)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    }
    parent.log_metrics({f"trials.{k}": v for k, v in counts.items()})
    with tempfile.TemporaryDirectory(prefix="search-pictures-") as tmp:
        for path in draw_pictures(study, Path(tmp)):
            parent.log_artifact(path, artifact_path="optuna")
    if not counts["complete"]:
        log.warning("study %s has no complete trial yet: no best trial to report", study.study_name)
        return None
    best = study.best_trial
    command = dvc_command(best, study.study_name)
    parent.log_metrics({"best_value": best.value})
    parent.set_tags(
        {
            "best_trial.number": str(best.number),
            "best_trial.run_id": best.user_attrs.get(RUN_ATTR, ""),
            "best_trial.dvc_command": command,
            **{f"best_trial.params.{k}": str(v) for k, v in best.params.items()},
        }
    )
    summary = {
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_value": best.value,
        "best_params": dict(best.params),
        "trials": counts,
        "dvc_command": command,
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    summary_file = sweep_dir / "best_trial.yaml"
    summary_file.write_text(yaml.safe_dump(summary, sort_keys=False), encoding="utf-8")
    parent.log_artifact(summary_file)
    log.info(
        "study %s: best trial %d, value %.4f, params %s",
        study.study_name,
        best.number,
        best.value,
        best.params,
    )
    print(
        f"Best trial {best.number} of study {study.study_name} (value {best.value:.6g}); "
        f"make it a DVC experiment of the whole pipeline with:\n{command}",
        flush=True,
    )
    return command


def describe_space(space: Space) -> dict[str, str]:
    """The search space as MLflow params of the search's run."""
    described = {f"search.space.{k}": str(d) for k, d in space.distributions.items()}
    described.update(
        {f"search.fixed.{o.split('=', 1)[0]}": o.split("=", 1)[1] for o in space.fixed if "=" in o}
    )
    return described
