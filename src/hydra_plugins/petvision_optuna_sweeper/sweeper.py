"""The Hydra Sweeper: one worker of an Optuna study. Start as many as you like, on one machine or
several, with the same ``study_name`` and ``storage``; each asks the study for trials until its
budget is spent. Each trial is one job of Hydra's launcher, run in this process."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class PetvisionOptunaSweeper(Sweeper):
    def __init__(
        self,
        task: str,
        objective: str,
        direction: str,
        study_name: str | None,
        storage: str,
        n_trials: int | None,
        timeout: float | None,
        max_failure_rate: float,
        heartbeat_interval: int,
        sampler: Any,
        pruner: Any,
        params: Any,
    ) -> None:
        self.task, self.objective, self.direction = task, objective, direction
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.timeout, self.max_failure_rate = n_trials, timeout, max_failure_rate
        self.heartbeat_interval = heartbeat_interval
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        params = (
            OmegaConf.to_container(params, resolve=True)
            if isinstance(params, DictConfig)
            else params
        )
        self.params = _flat(params or {})
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
        from petvision import study as search_study

        self._check()
        assert self.config is not None
        space = search_study.parse_space(self.params, arguments)
        if not space.distributions:
            from petvision.core.errors import ConfigError

            raise ConfigError(
                "hydra.sweeper.params: nothing to search (no choice, range or interval)"
            )
        return _Search(self, space).run()

    def _check(self) -> None:
        from petvision.core.errors import ConfigError

        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction}: must be maximize or minimize"
            )
        if not self.study_name:
            raise ConfigError(
                "hydra.sweeper.study_name is not set: a search continues the study of that name"
            )
        if self.n_trials is None and self.timeout is None:
            raise ConfigError("hydra.sweeper: set a budget, n_trials or timeout (seconds), or both")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"hydra.sweeper.n_trials={self.n_trials}: must be at least 1")
        if not self.objective.startswith("val_"):
            raise ConfigError(
                f"hydra.sweeper.objective={self.objective}: must name a validation value "
                "(val_<metric>, as Keras logs it each epoch)"
            )
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: must be in [0, 1]"
            )


class _Search:
    """One worker's part of a search (see petvision.study)."""

    def __init__(self, sweeper: PetvisionOptunaSweeper, space: Any) -> None:
        self.sweeper, self.space = sweeper, space
        self.finished = 0
        self.failed = 0
        self.last_error: BaseException | None = None

    def run(self) -> Any:
        import time

        from hydra.utils import instantiate

        from petvision import config as config_lib
        from petvision import study as search_study
        from petvision import tracking
        from petvision.core.errors import ConfigError
        from petvision.study import report as search_report

        sw = self.sweeper
        assert sw.config is not None
        job_config = OmegaConf.masked_copy(sw.config, [str(k) for k in sw.config if k != "hydra"])
        cfg = config_lib.load(job_config)
        if sw.task not in tuple(config_lib.Task):
            raise ConfigError(
                f"hydra.sweeper.task={sw.task}: must be one of {', '.join(config_lib.Task)}"
            )
        task = config_lib.task_config(cfg, config_lib.Task(sw.task))

        url = search_study.storage_url(sw.storage)
        storage = search_study.make_storage(url, sw.heartbeat_interval)
        sampler_cfg: dict[str, Any] = dict(
            OmegaConf.to_container(sw.sampler_cfg, resolve=True)  # type: ignore[arg-type]
            if isinstance(sw.sampler_cfg, DictConfig)
            else sw.sampler_cfg
        )
        seed = sampler_cfg.pop("seed", None)
        sampler = search_study.seeded_per_trial(lambda s: instantiate(sampler_cfg, seed=s), seed)
        pruner = instantiate(sw.pruner_cfg) if sw.pruner_cfg else None
        assert sw.study_name  # checked in sweep()
        study, created = search_study.open_study(
            sw.study_name, storage, sampler, pruner, sw.direction
        )
        self.study = study
        log.info(
            "study %s (%s) in %s; sampler %s, pruner %s; budget: %s trials, %s s",
            study.study_name,
            "new" if created else "continued",
            search_study.shown_url(url),
            sampler,
            type(pruner).__name__,
            sw.n_trials,
            sw.timeout,
        )

        parent_id = search_study.wait_for_parent_run(study, created)
        tags = {
            "petvision.search": "parent",
            "optuna.study_name": study.study_name,
            "optuna.storage": search_study.shown_url(url),
        }
        name = f"search {study.study_name}"
        with tracking.Run(
            cfg,
            "search",
            task=task,
            run_name=name,
            resume_run_id=parent_id,
            tags=tags,
        ) as parent:
            if parent_id is None:
                study.set_user_attr(search_study.PARENT_RUN_ATTR, parent.run_id)
            elif parent.run_id != parent_id:
                log.warning(
                    "the search's MLflow run %s is not in %s; this worker logs under run %s",
                    parent_id,
                    parent.uri,
                    parent.run_id,
                )
            parent.log_params(
                {
                    "search.objective": sw.objective,
                    "search.direction": sw.direction,
                    "search.sampler": str(sampler),
                    "search.pruner": type(pruner).__name__,
                    **search_report.describe_space(self.space),
                }
            )
            self.parent = parent
            deadline = None if sw.timeout is None else time.monotonic() + sw.timeout
            while not search_study.budget_spent(study, sw.n_trials):
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("time budget of %s s spent", sw.timeout)
                    break
                study.optimize(self._objective, n_trials=1, catch=(Exception,))
                if self.failed and self.failed / self.finished > sw.max_failure_rate:
                    raise RuntimeError(
                        f"{self.failed} of this worker's {self.finished} trials failed "
                        f"(hydra.sweeper.max_failure_rate={sw.max_failure_rate}); the last error "
                        f"is above"
                    ) from self.last_error
            sweep_dir = Path(str(sw.config.hydra.sweep.dir))
            return search_report.report(study, parent, sweep_dir)

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

        from petvision import study as search_study

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
        with search_study.trial_scope(trial, sw.objective, tags) as started, ctrl_c_seen() as seen:
            try:
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

    def _mark_runs(self, run_ids: list[str], trial: Any, state: str, status: str) -> None:
        """The trial's run: its Optuna state as a tag, pruned as KILLED, named after the trial."""
        from petvision import study as search_study

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


@contextlib.contextmanager
def ctrl_c_seen() -> Iterator[Callable[[], bool]]:
    """Yield a function that says whether SIGINT (Ctrl-C) arrived inside the block, which still
    raises KeyboardInterrupt as before. Needed because the interrupt does not always come out
    of a trial as one: landing while TensorFlow traces a step, it came out as that tracing's
    TypeError, and the trial would have counted as a failure and the search gone on."""
    seen: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield lambda: False  # handlers are the main thread's; an ignored SIGINT stays ignored
        return

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(seen)
    finally:
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
