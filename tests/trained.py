"""The quick recipe trained once per test session, for every test that needs trained models.

The quality bars (test_quality_gate.py) and the learning checks (test_learning.py) read the same
training: a copy of the project (project_copy.py) whose ``dvc repro`` runs download, preprocess
and both training stages as ``make run`` does. Which data it trains on depends on the CPU, as the
project's own precision choice does (``trainer.precision=auto``):

* where bfloat16 is native (AVX-512 BF16 or AMX), the quick preset itself, its training unchanged
  (only what follows it and no check reads is left out, :data:`AFTER_TRAINING_OFF`): the run the
  figures of docs/results.md come from, about 9 minutes on 2 cores; the bars apply to it;
* elsewhere the quick recipe on a smaller set (:data:`SMALLER`), in float32: the quick preset
  would take 30-45 minutes on 2 AVX2 cores, so only the learning checks run there.

``PETVISION_QUALITY_GATE=1`` or ``0`` chooses instead of the CPU. ``PETVISION_LEARNING_EXTRA``
(space-separated overrides) changes the training's configuration, to measure the checks under
other settings (``trainer.precision=float32``, another ``trainer.seed``); CI leaves it unset.

The training is started in the background when the session starts (:func:`start`, from
conftest.py, in whichever worker process comes first; at the lowest CPU priority, :data:`NICE`)
and the tests that read it run last (conftest.py orders them), so the rest of the suite runs while
it trains; a test that needs it waits for it (:func:`wait`). It lives in the session's shared
folder (conftest.session_dir).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from project_copy import ROOT, VENV_BIN, compose_params, env, git, make_project

QUICK = "quick"
# The quick preset on fewer pictures, both models at 64 px (the classifier at 96 in the preset):
# 1,800 / 200 for segmentation, 1,600 / 200 / 200 for classification. Everything else is the
# preset's. Measured in float32 (the precision CPUs without native bfloat16 train in): pet IoU
# 0.842 and test accuracy 0.880 against the learning checks' bars of 0.70 and 0.75.
SMALLER = "learning"
SMALLER_CHANGES = {
    "preset": SMALLER,
    "data": {
        "synthetic": {"num_images": 2000},
        "segmentation": {"val_count": 200},
        "classification": {
            "image_size": 64,
            "train_count": 1600,
            "val_count": 200,
            "test_count": 200,
        },
    },
}
# Both training stages; visualize cannot change a figure the checks read.
STAGES = ("train_segmentation", "train_xception")
# What the training stages do after training that no check reads: the unlike-the-training-data
# detector (a float32 pass over every training image: about a quarter of the segmentation stage
# on 2 cores) and the logged MLflow model. Off, they change no weight and no metric the checks
# read (the temperature is still fitted); the tiny-preset tests check both.
AFTER_TRAINING_OFF = ("trust.detector=false", "tracking.log_model=false")
LIMIT_S = 3600  # the quick preset on a slow 2-core CPU, while the rest of the suite runs beside it
# Three heavy processes on two cores cost more CPU time per test than two (a third pytest worker
# took 1.19x, docs/benchmarks.md); at the lowest priority the training yields the cores to the two
# workers whenever they want them and takes the cycles they leave.
NICE = 19


def gate_applies() -> bool:
    """Whether this session trains the quick preset and checks its bars: ``PETVISION_QUALITY_GATE``
    if set, else whether bfloat16 is native on this CPU (the rule ``trainer.precision=auto``
    follows, so a CPU that trains in float32 gets the smaller set)."""
    chosen = os.environ.get("PETVISION_QUALITY_GATE", "auto")
    if chosen in ("0", "1"):
        return chosen == "1"
    from petvision.training.runtime import bf16_native

    return bf16_native("cpu")


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return merged


@dataclass(frozen=True)
class TrainedPipeline:
    """A project copy after ``dvc repro`` of both training stages. Read-only for tests."""

    project: Path
    preset: str  # QUICK or SMALLER

    @property
    def is_quick_preset(self) -> bool:
        return self.preset == QUICK

    def path(self, relative: str) -> Path:
        return self.project / relative


def _folder() -> Path:
    from conftest import session_dir

    return session_dir() / "trained"


def start() -> None:
    """Make the project copy and start its ``dvc repro`` in the background, once a session
    (whichever worker comes first; the others find it started)."""
    from conftest import session_lock

    folder = _folder()
    with session_lock("trained"):
        if (folder / "preset").exists():
            return
        folder.mkdir()
        quick = gate_applies()
        if quick:
            project = make_project(folder / "project", experiment=QUICK)
        else:
            preset = yaml.safe_load((ROOT / "conf" / "experiment" / f"{QUICK}.yaml").read_text())
            project = make_project(
                folder / "project", experiment=SMALLER, overlay=_merged(preset, SMALLER_CHANGES)
            )
        # PETVISION_LEARNING_EXTRA: to measure the checks under other settings (test_learning.py)
        extra = [*AFTER_TRAINING_OFF, *os.environ.get("PETVISION_LEARNING_EXTRA", "").split()]
        compose_params(project, *extra)
        git(project, "commit", "--quiet", "--all", "-m", "what the checks read, and nothing else")
        # Its exit status in a file, for whichever worker waits for it.
        repro = shlex.join([str(VENV_BIN / "dvc"), "repro", *STAGES])
        # At the lowest CPU priority (NICE): the tests take the cores first, the training what
        # they leave and both once they are done (its readers run last, conftest.py).
        nice = ["nice", "-n", str(NICE)] if shutil.which("nice") else []
        with (folder / "dvc-repro.log").open("w") as out:
            process = subprocess.Popen(
                [
                    *nice,
                    "sh",
                    "-c",
                    f'{repro}; echo $? > "$0.part" && mv "$0.part" "$0"',
                    folder / "rc",
                ],
                cwd=project,
                env=env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() ends dvc and the stage it runs together
            )
        (folder / "pid").write_text(str(process.pid))
        (folder / "started").write_text(str(time.time()))
        (folder / "preset").write_text(QUICK if quick else SMALLER)


def wait() -> TrainedPipeline:
    """The trained pipeline, once its ``dvc repro`` has finished; fails the test with the end of
    its log if it failed or ran past :data:`LIMIT_S`."""
    folder = _folder()
    assert (folder / "preset").exists(), "trained.start was not called (conftest.py)"
    deadline = float((folder / "started").read_text()) + LIMIT_S
    while not (folder / "rc").exists():
        if time.time() > deadline:
            stop()
            pytest.fail(f"the trained pipeline's dvc repro ran past {LIMIT_S} s: {_tail()}")
        time.sleep(2)
    code = int((folder / "rc").read_text())
    if code != 0:
        pytest.fail(f"the trained pipeline's dvc repro exited {code}: {_tail()}")
    return TrainedPipeline(folder / "project", (folder / "preset").read_text())


def stop() -> None:
    """End a training still running (the session is over, or it ran too long)."""
    pid_file = _folder() / "pid"
    if pid_file.exists() and not (_folder() / "rc").exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail() -> str:
    return (_folder() / "dvc-repro.log").read_text(errors="replace")[-6000:]
