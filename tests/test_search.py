"""Hyperparameter search with Optuna through the project's Hydra sweeper: the search space, the
per-trial seeding, pruning through a Keras callback, the trial's MLflow run under the search's
run, and (slow, in project copies) a whole search, two workers sharing one study, a restarted
search, and the best trial turned into a `dvc exp run` command."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from project_copy import (
    VENV_BIN,
    copy_project,
    dvc,
    env,
    load_params,
    mlflow_runs,
)

from hydra_plugins.petvision_optuna_sweeper import report as search_report
from hydra_plugins.petvision_optuna_sweeper import study as search_study
from petvision import search, tracking
from petvision.config import task_config
from petvision.core.errors import ConfigError
from petvision.core.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def classifier_params() -> dict:
    return yaml.safe_load((ROOT / "conf/hparams_search/classifier.yaml").read_text())["hydra"][
        "sweeper"
    ]["params"]


# --------------------------------------------------------------------------- search space


def test_search_space_reads_hydra_sweep_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = search_study.parse_space(
        classifier_params(), ["hparams_search=classifier", "classification.model.dropout=0.3"]
    )
    d = space.distributions
    assert d["classification.train.learning_rate"] == FloatDistribution(0.0001, 0.01, log=True)
    assert d["classification.train.batch_size"] == CategoricalDistribution([8, 16, 32])
    assert d["classification.train.optimizer"] == CategoricalDistribution(["adam", "rmsprop"])
    # Hydra's range excludes its end, as Python's does; Optuna's high is included.
    assert d["classification.train.epochs"] == IntDistribution(10, 30, step=5)
    # A plain value on the command line fixes what the config searches.
    assert "classification.model.dropout" not in d
    assert space.fixed == ["hparams_search=classifier", "classification.model.dropout=0.3"]


def test_search_space_rejects_what_optuna_cannot_search():
    with pytest.raises(ConfigError, match=r"params\.lr: a log scale needs a positive lower bound"):
        search_study.parse_space({"lr": "tag(log, interval(0, 1))"}, [])
    with pytest.raises(ConfigError, match=r"params\.n: range\(5, 5, step=1\) is empty"):
        search_study.parse_space({"n": "range(5, 5)"}, [])


@pytest.mark.parametrize(
    "value", [1e-05, 0.1 + 0.2, 0.00123456789, 16, -3, True, "adam", "a b", "1e-3", "null", "it's"]
)
def test_override_values_read_back_as_written(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides(
        [f"k={search_study.override_value(value)}"]
    )
    assert parsed.value() == value and type(parsed.value()) is type(value)


# --------------------------------------------------------------------------- sampling


def ask_params(study, n: int) -> list[dict]:
    space = search_study.parse_space(classifier_params(), []).distributions
    found = []
    for _ in range(n):
        trial = study.ask()
        found.append(search_study.suggest(trial, space))
        study.tell(trial, 0.5)
    return found


def two_workers(sampler_a, sampler_b):
    storage = optuna.storages.InMemoryStorage()
    a = optuna.create_study(
        study_name="s", storage=storage, sampler=sampler_a, direction="maximize"
    )
    b = optuna.load_study(study_name="s", storage=storage, sampler=sampler_b)
    return a, b


def test_one_seed_repeats_a_search_and_workers_sharing_a_study_draw_different_points():
    def seeded():
        return search_study.seeded_per_trial(lambda s: optuna.samplers.TPESampler(seed=s), 1337)

    first = ask_params(optuna.create_study(sampler=seeded(), direction="maximize"), 3)
    again = ask_params(optuna.create_study(sampler=seeded(), direction="maximize"), 3)
    assert first == again

    a, b = two_workers(seeded(), seeded())
    drawn = [*ask_params(a, 1), *ask_params(b, 1)]
    assert drawn[0] != drawn[1]
    # What the per-trial seed prevents: one seed in both workers draws the same first point.
    a, b = two_workers(optuna.samplers.TPESampler(seed=1337), optuna.samplers.TPESampler(seed=1337))
    plain = [*ask_params(a, 1), *ask_params(b, 1)]
    assert plain[0] == plain[1]


def test_budget_counts_finished_and_running_trials_not_failed_ones():
    study = optuna.create_study(direction="maximize")
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert not search_study.budget_spent(study, 3)
    study.ask()  # running in some worker
    assert search_study.budget_spent(study, 3)
    assert not search_study.budget_spent(study, None)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask() outside optimize()
def test_a_dead_workers_trial_leaves_the_budget_and_is_queued_again(tmp_path):
    storage = search_study.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1)
    study, created = search_study.open_study("s", storage, None, None, "maximize")
    assert created
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)  # what a worker's heartbeat thread does
    assert search_study.budget_spent(study, 1)
    # Over two heartbeat intervals (timestamps in whole seconds): the worker is gone.
    time.sleep(3.5)
    assert not search_study.budget_spent(study, 1)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING"], states
    assert study.trials[1].params == study.trials[0].params
    _, created = search_study.open_study("s", storage, None, None, "maximize")
    assert not created


# --------------------------------------------------------------------------- inside a trial


def tiny_fit(callbacks, epochs: int = 3):
    import keras

    rng = np.random.default_rng(0)
    x, y = (
        rng.normal(size=(32, 4)).astype("float32"),
        rng.integers(0, 2, size=(32, 1)).astype("float32"),
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer="sgd",
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model.fit(x, y, validation_data=(x, y), epochs=epochs, verbose=0, callbacks=callbacks)


def test_each_epoch_is_reported_and_a_hopeless_trial_is_pruned():
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    good = study.ask()
    for epoch in range(3):
        good.report(1.0, epoch)
    study.tell(good, 1.0)

    assert search.keras_callbacks() == []  # outside a search: nothing added
    hopeless = study.ask()
    with (
        search.active_trial(hopeless, "val_accuracy"),
        pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"),
    ):
        tiny_fit(search.keras_callbacks())
    assert search.active() is None
    assert list(study.trials[1].intermediate_values) == [0]

    study = optuna.create_study(direction="maximize")  # no pruning: every epoch reported
    trial = study.ask()
    with search.active_trial(trial, "val_accuracy"):
        history = tiny_fit(search.keras_callbacks())
    assert study.trials[0].intermediate_values == dict(enumerate(history.history["val_accuracy"]))


def test_a_trial_returns_its_objective_and_names_a_missing_one():
    summary = {"val": {"accuracy": 0.75, "loss": 0.5}}
    assert (
        search.objective_value(summary) is None
    )  # outside a search: the stage returns nothing new
    with search.active_trial(optuna.create_study().ask(), "val_accuracy"):
        assert search.objective_value(summary) == 0.75
    with (
        search.active_trial(optuna.create_study().ask(), "val_pet_iou"),
        pytest.raises(ConfigError, match="objective=val_pet_iou.*val_accuracy, val_loss"),
    ):
        search.objective_value(summary)
    with (
        pytest.raises(ConfigError, match="objective=accuracy: must name a validation value"),
        search.active_trial(optuna.create_study().ask(), "accuracy"),
    ):
        pass


def test_runs_started_in_a_trial_are_children_of_the_search_run(make_config):
    cfg = make_config()
    with tracking.Run(
        cfg, "search", task=task_config(cfg, Task.classification), run_name="parent"
    ) as parent:
        tags = {"mlflow.parentRunId": parent.run_id, "optuna.trial.number": "0"}
        with (
            tracking.runs_tagged(tags) as started,
            tracking.Run(
                cfg, "train_xception", task=task_config(cfg, Task.classification)
            ) as child,
        ):
            pass
        with tracking.Run(
            cfg, "train_xception", task=task_config(cfg, Task.classification)
        ) as outside:
            pass
    client = parent._client
    assert started == [child.run_id]
    tags = client.get_run(child.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.run_id and tags["optuna.trial.number"] == "0"
    assert "mlflow.parentRunId" not in client.get_run(outside.run_id).data.tags


# --------------------------------------------------------------------------- the report


def test_the_dvc_command_sets_the_trials_values_and_nothing_of_the_search():
    trial = optuna.trial.create_trial(
        params={"classification.train.learning_rate": 0.00123},
        distributions={
            "classification.train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2)
        },
        value=0.9,
        user_attrs={
            search_study.OVERRIDES_ATTR: [
                "hparams_search=classifier",
                "classification.model.dropout=0.3",
                "classification.train.optimizer=adam",
                "classification.train.learning_rate=0.00123",
                "classification.model.augmentation.flip='horizontal and vertical'",
            ]
        },
    )
    trial.number = 7
    command = search_report.dvc_command(trial, "classifier quick")
    words = shlex.split(command)
    assert words[:5] == ["dvc", "exp", "run", "-n", "classifier-quick-trial-7"]
    assert words[5::2] == ["-S"] * 4
    assert words[6::2] == [
        "classification.model.dropout=0.3",
        "classification.train.optimizer=adam",
        "classification.train.learning_rate=0.00123",
        "classification.model.augmentation.flip='horizontal and vertical'",
    ]


def test_a_relative_sqlite_storage_lies_in_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert search_study.storage_url("sqlite:///optuna.db") == f"sqlite:///{ROOT / 'optuna.db'}"
    assert search_study.storage_url("sqlite:////abs/o.db") == "sqlite:////abs/o.db"
    assert (
        search_study.shown_url("postgresql://me:secret@db:5432/optuna")
        == "postgresql://me:***@db:5432/optuna"
    )


# --------------------------------------------------------------------------- whole searches (slow)


STAGE = [
    str(VENV_BIN / "python"),
    "-m",
    "petvision.train_xception",
    "-m",
    "hparams_search=classifier",
]


def search_command(project: Path, study: str, n_trials: int) -> list[str]:
    """A classifier search on the tiny data: 1 epoch a trial (fixed on the command line). The
    objective is the validation AUC: on 10 validation images the accuracy ties too often."""
    return [
        *STAGE,
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.objective=val_auc",
        "classification.train.epochs=1",
        f"hydra.sweep.dir={project / 'multirun' / study}",
    ]


# A pruner that stops every trial at its first report: pruning made deterministic.
PRUNE_ALL = [
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "~hydra.sweeper.pruner.n_startup_trials",
    "hydra.sweeper.pruner.n_warmup_steps=0",
    "+hydra.sweeper.pruner.lower=2.0",
]


def start(project: Path, command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=project,
        env=env(PYTHONPATH="src"),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
    )


def _interruptible() -> None:
    """A shell starts its background jobs (`make test &`) with SIGINT ignored, and children
    inherit it: the search would never see the Ctrl-C the interruption test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(process: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, f"search exited {process.returncode}:\n{output[-6000:]}"
    return output


def load(project: Path, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=f"sqlite:///{project / 'optuna.db'}")


def search_runs(project: Path, study: str) -> tuple[object, dict[int, object]]:
    """The search's one parent run, and its child runs by trial number (each number once)."""
    (parent,) = mlflow_runs(
        project, f"tags.`petvision.search` = 'parent' and tags.`optuna.study_name` = '{study}'"
    )
    children = mlflow_runs(project, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    numbers = [int(r.data.tags["optuna.trial.number"]) for r in children]
    assert len(numbers) == len(set(numbers)), f"a trial has more than one run: {sorted(numbers)}"
    return parent, {int(r.data.tags["optuna.trial.number"]): r for r in children}


def printed_best(output: str) -> tuple[int, float, str]:
    match = re.search(
        r"Best trial (\d+) of study \S+ \(value ([^)]+)\);.*\n(dvc exp run .*)", output
    )
    assert match, f"no best trial printed:\n{output[-3000:]}"
    return int(match.group(1)), float(match.group(2)), match.group(3)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Searched:
    """The module's search, two workers sharing one study in a copy of the tiny repro'd project."""

    project: Path
    output: str  # of the worker that ended last, which saw every trial
    seconds: float


def run_workers(project: Path, command: list[str], logs: list[Path]) -> list[str]:
    """Start one search worker per log at once and wait for all: their outputs, in the order
    the workers ended (the last one saw every trial)."""
    workers = [start(project, command, log) for log in logs]
    ended: list[int] = []
    try:
        deadline = time.monotonic() + 900
        while len(ended) < len(workers) and time.monotonic() < deadline:
            time.sleep(1)
            ended += [i for i, p in enumerate(workers) if i not in ended and p.poll() is not None]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    order = [*ended, *(i for i in range(len(workers)) if i not in ended)]
    return [finish(workers[i], logs[i], timeout=10) for i in order]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, repro_project) -> Searched:
    """A search of 3 trials run by two workers at once (the same command started twice), in a
    copy of the tiny repro'd project. Every test of a whole search reads this one: each worker is
    a whole search, so the one-worker behaviours show in it too."""
    project = copy_project(repro_project, tmp_path_factory.mktemp("search") / "project")
    outputs = [project / "models/classifier.keras", project / "reports/classification/metrics.json"]
    before = [digest(p) for p in outputs]
    logs = [project.parent / "worker-a.log", project.parent / "worker-b.log"]
    began = time.monotonic()
    printed = run_workers(project, search_command(project, "tiny", 3), logs)
    elapsed = time.monotonic() - began
    assert [digest(p) for p in outputs] == before, "the search changed the pipeline's outputs"
    return Searched(project, printed[-1], elapsed)


@pytest.mark.slow
def test_a_small_search_records_each_trial_as_a_child_run_of_one_search_run(searched):
    project, output = searched.project, searched.output
    print(f"3-trial search of two workers on the tiny data: {searched.seconds:.0f} s")
    study = load(project, "tiny")
    trials = study.trials
    # The budget is 3; two workers asking at the same moment may pass it by one.
    assert 3 <= len(trials) <= 4, [t.number for t in trials]
    assert [t.number for t in trials] == list(range(len(trials)))
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(trials)
    parent, children = search_runs(project, "tiny")  # one search run for both workers
    assert sorted(children) == [t.number for t in trials]
    for trial in trials:
        run = children[trial.number]
        assert trial.user_attrs[search_study.RUN_ATTR] == run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial.state"] == "COMPLETE"
        for key, value in trial.params.items():
            assert run.data.params[key] == str(value)
        assert run.data.metrics["best.val.auc"] == pytest.approx(trial.value)
        # the trial's job wrote its outputs in its own folder, not the pipeline's
        assert (
            project / "multirun" / "tiny" / f"trial-{trial.number}" / "models" / "classifier.keras"
        ).is_file()

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    steps = client.get_metric_history(children[0].info.run_id, "val_auc")
    assert [m.step for m in steps] == [0]
    best = study.best_trial
    assert best.value == max(t.value for t in trials)
    assert parent.data.tags["optuna.study_name"] == "tiny"
    assert parent.data.tags["best_trial.number"] == str(best.number)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    pictures = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optimization_history.png", "param_importances.png", "slice.png"} <= pictures
    # Each worker prints a best trial; the one that ended last saw every trial.
    number, value, command = printed_best(output)
    assert (number, value) == (best.number, pytest.approx(best.value, rel=1e-5))
    assert parent.data.tags["best_trial.dvc_command"] == command


@pytest.mark.slow
def test_two_workers_share_one_study_and_lose_no_trial(searched):
    trials = load(searched.project, "tiny").trials
    by_worker: dict[str, list] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    assert len(by_worker) == 2, f"one worker ran every trial: {sorted(by_worker)}"
    spans = [
        (min(t.datetime_start for t in ts), max(t.datetime_complete for t in ts))
        for ts in by_worker.values()
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], (
        f"the workers did not overlap: {spans}"
    )


@pytest.mark.slow
def test_the_printed_dvc_command_makes_the_best_trial_a_pipeline_experiment(searched):
    project = searched.project
    best = load(project, "tiny").best_trial
    _, _, command = printed_best(searched.output)
    words = shlex.split(command)
    assert words[:3] == ["dvc", "exp", "run"]
    dvc(project, *words[1:], timeout=900)
    params = load_params(project)
    for key, value in best.params.items():
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, key
    assert params["classification"]["train"]["epochs"] == 1
    shown = dvc(project, "exp", "show", "--json").stdout
    assert words[4] in shown


@pytest.mark.slow
def test_an_interrupted_search_started_again_continues_its_study(searched):
    import signal

    import mlflow

    project = searched.project
    done = len(load(project, "tiny").trials)  # 3, or 4 where both workers asked at once
    log = project.parent / "interrupted.log"
    process = start(project, search_command(project, "tiny", done + 2), log)
    deadline = time.monotonic() + 600
    # Interrupted (Ctrl-C) once its first trial has its run, i.e. while it trains.
    while not mlflow_runs(project, f"tags.`optuna.trial.number` = '{done}'"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=300)
    states = [t.state.name for t in load(project, "tiny").trials]
    assert states == ["COMPLETE"] * done + ["FAIL"], states
    # The worker ends its interrupted trial's run as KILLED, unless the Ctrl-C landed inside an
    # SQLite write, which leaves that process unable to write the store again (seen once under
    # load). Whichever happened, the run is now left RUNNING, as that case and a SIGKILLed worker
    # leave it: the search started again must end it.
    (interrupted,) = mlflow_runs(project, f"tags.`optuna.trial.number` = '{done}'")
    assert interrupted.info.status in ("KILLED", "RUNNING"), interrupted.info.status
    mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}").update_run(
        interrupted.info.run_id, status="RUNNING"
    )

    # Started again with a budget of one more than was done: the failed trial does not count,
    # one more runs; this time a pruner stops it after its first epoch.
    again = project.parent / "again.log"
    finish(start(project, [*search_command(project, "tiny", done + 1), *PRUNE_ALL], again), again)
    study = load(project, "tiny")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * done + ["FAIL", "PRUNED"]
    parent, children = search_runs(project, "tiny")  # still the one search run
    assert sorted(children) == list(range(done + 2))
    assert (children[done].info.status, children[done].data.tags["optuna.trial.state"]) == (
        "KILLED",
        "FAIL",
    )
    pruned = children[done + 1]
    assert (pruned.info.status, pruned.data.tags["optuna.trial.state"]) == ("KILLED", "PRUNED")
    assert "val_auc" in pruned.data.metrics  # the epoch it was judged on is in its run
    assert study.trials[done + 1].intermediate_values == {0: pruned.data.metrics["val_auc"]}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials.pruned"] == 1


@pytest.mark.slow
def test_a_sigkilled_workers_trial_run_is_ended_when_the_search_starts_again(
    tmp_path, repro_project
):
    """**Real SIGKILL** of a search worker while its trial trains: nothing in it can end the
    trial's MLflow run. Started again once the heartbeat is stale, the search fails that trial,
    ends its run as KILLED and runs the trial's parameters again."""
    project = copy_project(repro_project, tmp_path / "project")
    command = [*search_command(project, "killed", 1), "hydra.sweeper.heartbeat_interval=1"]
    first = start(project, command, tmp_path / "first.log")
    deadline = time.monotonic() + 600
    trial_0 = "tags.`optuna.study_name` = 'killed' and tags.`optuna.trial.number` = '0'"
    while not mlflow_runs(project, trial_0):
        assert first.poll() is None and time.monotonic() < deadline, (
            tmp_path / "first.log"
        ).read_text()[-3000:]
        time.sleep(1)
    first.kill()
    first.wait(timeout=60)
    (killed,) = mlflow_runs(project, trial_0)
    assert killed.info.status == "RUNNING"
    time.sleep(4)  # over two heartbeat intervals (whole seconds): the worker is gone

    again = tmp_path / "again.log"
    output = finish(start(project, command, again), again)
    assert "was left running; ended as KILLED" in output
    study = load(project, "killed")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].params == study.trials[0].params  # queued again
    _, children = search_runs(project, "killed")
    assert (children[0].info.status, children[0].data.tags["optuna.trial.state"]) == (
        "KILLED",
        "FAIL",
    )
    assert children[1].info.status == "FINISHED"


def test_ctrl_c_is_seen_even_where_a_library_swallows_the_keyboard_interrupt():
    """A real SIGINT to this process inside the block: the KeyboardInterrupt still comes (the
    previous handler runs), and where code turns it into another error, as TensorFlow's tracing
    did in a search interrupted during a trial's first step, the block still knows."""
    import signal

    from hydra_plugins.petvision_optuna_sweeper.sweeper import ctrl_c_seen

    # Python's own handler, as in a terminal: a process started in the background by a shell (a
    # CI runner's `cmd &`, nohup) inherits SIGINT ignored, and then no KeyboardInterrupt comes.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_twice(ctrl_c_seen)
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_a_ctrl_c_that_a_library_loses_is_delivered_again_while_the_stage_runs():
    """A real SIGINT to this process inside a stage that loses the KeyboardInterrupt and goes on
    (as TensorFlow's tracing once did, looping forever): the search interrupts it again after the
    grace time, as a user presses Ctrl-C again; once the stage is over, nothing is repeated."""
    import os
    import signal

    from hydra_plugins.petvision_optuna_sweeper.sweeper import ctrl_c_seen

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        lost = 0
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt), ctrl_c_seen(repeat_after_s=0.5) as seen:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                lost += 1  # the library drops it and carries on
            while time.monotonic() - began < 20:  # stuck
                time.sleep(0.01)
        assert lost == 1 and seen.count == 2
        assert time.monotonic() - began < 5
        time.sleep(1.5)  # once the stage is over, no Ctrl-C is delivered again
    finally:
        signal.signal(signal.SIGINT, inherited)


def _interrupt_twice(ctrl_c_seen):
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_seen() as seen:
        assert not seen()
        with pytest.raises(TypeError):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises here, at once
            except KeyboardInterrupt:
                raise TypeError("Expected int32, but got None") from None
        assert seen()
    assert signal.getsignal(signal.SIGINT) is before
    with ctrl_c_seen() as seen, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is before
