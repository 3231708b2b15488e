"""The Hydra Sweeper: one worker of an Optuna study. Start as many as you like, on one machine or
several, with the same ``study_name`` and ``storage``; each asks the study for trials until its
budget is spent. Each trial is one job of Hydra's launcher, run in this process."""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from . import report as search_report
from . import study as search_study
from .config import PetvisionOptunaSweeperConf

log = logging.getLogger(__name__)


class PetvisionOptunaSweeper(Sweeper):
    def __init__(self, **config: Any) -> None:
        """Hydra passes ``hydra.sweeper``'s keys (:class:`PetvisionOptunaSweeperConf`) one by
        one; they are kept together, as that schema."""
        self.settings = PetvisionOptunaSweeperConf(**config)
        self.params = _flat(_container(self.settings.params) or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:

        _check(self.settings)
        assert self.config is not None
        space = search_study.parse_space(self.params, arguments)
        if not space.distributions:
            from petvision.core.errors import ConfigError

            raise ConfigError(
                "hydra.sweeper.params: nothing to search (no choice, range or interval)"
            )
        return _Search(self, space).run()


def _check(settings: PetvisionOptunaSweeperConf) -> None:
    from petvision.core.errors import ConfigError

    if settings.direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"hydra.sweeper.direction={settings.direction}: must be maximize or minimize"
        )
    if not settings.study_name:
        raise ConfigError(
            "hydra.sweeper.study_name is not set: a search continues the study of that name"
        )
    if settings.n_trials is None and settings.timeout is None:
        raise ConfigError("hydra.sweeper: set a budget, n_trials or timeout (seconds), or both")
    if settings.n_trials is not None and settings.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={settings.n_trials}: must be at least 1")
    if not settings.objective.startswith("val_"):
        raise ConfigError(
            f"hydra.sweeper.objective={settings.objective}: must name a validation value "
            "(val_<metric>, as Keras logs it each epoch)"
        )
    if not 0.0 <= settings.max_failure_rate <= 1.0:
        raise ConfigError(
            f"hydra.sweeper.max_failure_rate={settings.max_failure_rate}: must be in [0, 1]"
        )


class OpenStudy(NamedTuple):
    """The study this worker joined, and what it was opened with."""

    study: Any  # optuna.Study
    created: bool  # by this worker
    url: str  # the storage's, resolved against the project root
    sampler: Any
    pruner: Any


def open_study(settings: PetvisionOptunaSweeperConf) -> OpenStudy:
    """The study ``settings`` name, with their storage, per-trial seeded sampler and pruner."""
    from hydra.utils import instantiate

    url = search_study.storage_url(settings.storage)
    storage = search_study.make_storage(url, settings.heartbeat_interval)
    sampler_cfg: dict[str, Any] = dict(_container(settings.sampler))
    seed = sampler_cfg.pop("seed", None)
    sampler = search_study.seeded_per_trial(lambda s: instantiate(sampler_cfg, seed=s), seed)
    pruner = instantiate(settings.pruner) if settings.pruner else None
    assert settings.study_name  # checked in sweep()
    study, created = search_study.open_study(
        settings.study_name, storage, sampler, pruner, settings.direction
    )
    log.info(
        "study %s (%s) in %s; sampler %s, pruner %s; budget: %s trials, %s s",
        study.study_name,
        "new" if created else "continued",
        search_study.shown_url(url),
        sampler,
        type(pruner).__name__,
        settings.n_trials,
        settings.timeout,
    )
    return OpenStudy(study, created, url, sampler, pruner)


class _Search:
    """One worker's part of a search (see :mod:`.study`)."""

    def __init__(self, sweeper: PetvisionOptunaSweeper, space: Any) -> None:
        self.sweeper, self.space = sweeper, space
        self.settings = sweeper.settings
        self.finished = 0
        self.failed = 0
        self.last_error: BaseException | None = None

    def run(self) -> Any:
        from petvision import tracking

        from . import study as search_study

        config = self.sweeper.config
        assert config is not None
        cfg, task = _job_config(config, self.settings.task)
        opened = open_study(self.settings)
        self.study = opened.study
        parent_id = search_study.wait_for_parent_run(opened.study, opened.created)
        tags = {
            "petvision.search": "parent",
            "optuna.study_name": opened.study.study_name,
            "optuna.storage": search_study.shown_url(opened.url),
        }
        name = f"search {opened.study.study_name}"
        with tracking.Run(
            cfg, "search", task=task, run_name=name, resume_run_id=parent_id, tags=tags
        ) as parent:
            if parent_id is None:
                opened.study.set_user_attr(search_study.PARENT_RUN_ATTR, parent.run_id)
            elif parent.run_id != parent_id:
                log.warning(
                    "the search's MLflow run %s is not in %s; this worker logs under run %s",
                    parent_id,
                    parent.uri,
                    parent.run_id,
                )
            parent.log_params(
                {
                    "search.objective": self.settings.objective,
                    "search.direction": self.settings.direction,
                    "search.sampler": str(opened.sampler),
                    "search.pruner": type(opened.pruner).__name__,
                    **search_report.describe_space(self.space),
                }
            )
            self.parent = parent
            self._end_left_runs()
            self._run_trials()
            sweep_dir = Path(str(config.hydra.sweep.dir))
            return search_report.report(opened.study, parent, sweep_dir)

    def _run_trials(self) -> None:
        """Ask the study for trials until its budget (or this worker's time) is spent."""
        import time

        settings = self.settings
        deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
        while not search_study.budget_spent(self.study, settings.n_trials):
            if deadline is not None and time.monotonic() >= deadline:
                log.info("time budget of %s s spent", settings.timeout)
                break
            self.study.optimize(self._objective, n_trials=1, catch=(Exception,))
            if self.failed and self.failed / self.finished > settings.max_failure_rate:
                raise RuntimeError(
                    f"{self.failed} of this worker's {self.finished} trials failed "
                    f"(hydra.sweeper.max_failure_rate={settings.max_failure_rate}); the last "
                    f"error is above"
                ) from self.last_error

    def _objective(self, trial: Any) -> float:
        import optuna

        self.finished += 1
        try:
            return self._run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            self.failed += 1
            self.last_error = exc
            raise

    def _run_trial(self, trial: Any) -> float:
        import optuna
        from hydra.core.utils import JobStatus

        sw = self.sweeper
        values = search_study.suggest(trial, self.space.distributions)
        overrides = search_study.trial_overrides(self.space, values)
        trial.set_user_attr(search_study.OVERRIDES_ATTR, overrides)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        # A job folder per trial number: workers started in the same second share a sweep dir.
        job = [*overrides, f"hydra.sweep.subdir=trial-{trial.number}"]
        tags = {
            "mlflow.parentRunId": self.parent.run_id,
            "petvision.search": "trial",
            "optuna.study_name": self.study.study_name,
            "optuna.trial.number": str(trial.number),
        }
        state, status = "FAIL", "FAILED"
        objective = self.settings.objective
        with search_study.trial_scope(trial, objective, tags) as started:
            try:
                # Around the stage alone: the trial's bookkeeping below is never interrupted twice.
                with ctrl_c_seen() as seen:
                    (ret,) = sw.launcher.launch([job], initial_job_idx=sw.job_idx)
                sw.job_idx += 1
                if ret.status == JobStatus.FAILED:
                    error = ret._return_value
                    if isinstance(error, optuna.TrialPruned):
                        state, status = "PRUNED", "KILLED"
                    elif seen():
                        # Ctrl-C, whatever error came out of the stage in its place.
                        raise KeyboardInterrupt(str(error)) from error
                    raise error
                value = ret.return_value
                if value is None:
                    raise RuntimeError("the stage returned no objective value")
                state, status = "COMPLETE", "FINISHED"
                return float(value)
            except KeyboardInterrupt:
                state, status = "FAIL", "KILLED"
                raise
            finally:
                self._mark_runs(started, trial, state, status)
                _release_memory()

    def _end_left_runs(self) -> None:
        """End the trial runs an earlier worker left RUNNING though their trial is over: a worker
        SIGKILLed, or one whose Ctrl-C landed inside an SQLite write and left that process unable
        to write the store again (its trial failed, its run could not be ended). They end as the
        worker would have ended them, tagged with the trial's state: KILLED unless the trial is
        complete. A trial still running in some worker keeps its run as it is."""
        from optuna.trial import TrialState

        search_study.fail_stale_trials(self.study)  # a dead worker's trial is over too
        states = {t.number: t.state for t in self.study.get_trials(deepcopy=False)}
        for run_id, tags in self.parent.running_children().items():
            number = tags.get("optuna.trial.number", "")
            state = states.get(int(number)) if number.isdigit() else None
            if state is None or state == TrialState.RUNNING:
                continue
            status = "FINISHED" if state == TrialState.COMPLETE else "KILLED"
            log.info("trial %s's run %s was left running; ended as %s", number, run_id, status)
            self.parent.close_other_run(
                run_id,
                {
                    "optuna.trial.state": state.name,
                    "mlflow.runName": f"trial {number} ({state.name.lower()})",
                },
                status,
                f"trial {number} state",
            )

    def _mark_runs(self, run_ids: list[str], trial: Any, state: str, status: str) -> None:
        """The trial's run: its Optuna state as a tag, pruned as KILLED, named after the trial."""

        if not run_ids:
            return
        trial.set_user_attr(search_study.RUN_ATTR, run_ids[0])
        tags = {
            "optuna.trial.state": state,
            "mlflow.runName": f"trial {trial.number} ({state.lower()})",
        }
        for run_id in run_ids:
            # The search's run logs it: a lost call is recorded there, never fails the search.
            self.parent.close_other_run(run_id, tags, status, f"trial {trial.number} state")


def _job_config(config: DictConfig, task_name: str) -> tuple[Any, Any]:
    """The trials' configuration, checked, without Hydra's own node, and the task view of the
    stage whose MLflow experiment holds the search's run (``hydra.sweeper.task``)."""
    from petvision import config as config_lib
    from petvision.core.errors import ConfigError

    job_config = OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])
    cfg = config_lib.load(job_config)
    if task_name not in tuple(config_lib.Task):
        raise ConfigError(
            f"hydra.sweeper.task={task_name}: must be one of {', '.join(config_lib.Task)}"
        )
    return cfg, config_lib.task_config(cfg, config_lib.Task(task_name))


def _container(node: Any) -> Any:
    """A configuration node (Hydra passes nested keys as DictConfig) as plain Python values."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# How long a Ctrl-C may take to end a trial's stage before it is delivered again.
CTRL_C_REPEAT_S = 30.0


class CtrlC:
    """Whether SIGINT (Ctrl-C) arrived inside ``ctrl_c_seen``'s block: called, it says so."""

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0  # time.monotonic() of the last one

    def __call__(self) -> bool:
        return self.count > 0


@contextlib.contextmanager
def ctrl_c_seen(repeat_after_s: float = CTRL_C_REPEAT_S) -> Iterator[CtrlC]:
    """Yield a ``CtrlC`` that says whether SIGINT (Ctrl-C) arrived inside the block, which still
    raises KeyboardInterrupt as before. Needed because the interrupt does not always come out
    of a trial as one: landing while TensorFlow traces a step, it came out as that tracing's
    TypeError, and the trial would have counted as a failure and the search gone on.

    A Ctrl-C that has not ended the block after ``repeat_after_s`` is delivered again, as a user
    presses it again: one landing in TensorFlow's C++ while it traced a step once left its state
    broken and the stage looping forever, eating memory."""
    ctrl_c = CtrlC()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield ctrl_c  # handlers are the main thread's; an ignored SIGINT stays ignored
        return

    def handler(signum: int, frame: Any) -> None:
        ctrl_c.count += 1
        ctrl_c.last_at = time.monotonic()
        previous(signum, frame)

    done = threading.Event()

    def repeat() -> None:
        while not done.wait(min(1.0, repeat_after_s / 4)):
            if ctrl_c.count and time.monotonic() - ctrl_c.last_at >= repeat_after_s:
                log.warning(
                    "Ctrl-C did not end the trial within %.0f s: interrupting it again",
                    repeat_after_s,
                )
                ctrl_c.last_at = time.monotonic()
                _thread.interrupt_main(signal.SIGINT)

    signal.signal(signal.SIGINT, handler)
    watcher = threading.Thread(target=repeat, daemon=True, name="ctrl-c-repeat")
    watcher.start()
    try:
        yield ctrl_c
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)


def _flat(tree: dict, prefix: str = "") -> dict:
    """``params`` keys are dotted config keys; one set on the command line
    (``hydra.sweeper.params.a.b=...``) arrives nested: the same key either way."""
    flat: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _release_memory() -> None:
    """Trials run one after another in this process: drop the last one's Keras graph state."""
    import gc

    try:
        import keras

        keras.backend.clear_session()
    except Exception as exc:  # nothing to release
        log.debug("no Keras session to clear: %s", exc)
    gc.collect()
