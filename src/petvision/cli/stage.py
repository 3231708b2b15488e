"""How a stage module becomes a Hydra application.

Every ``petvision/<stage>.py`` ends with ``stage.main(run_<stage>, writes=...)``: Hydra composes
``conf/`` with the command line's overrides (or reads ``params.yaml`` when dvc.yaml passes
``--config-dir . --config-name params``), :func:`petvision.config.load` validates the result,
and the plain function ``run_<stage>(cfg)`` does the work. Tests call that function directly.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from petvision import config as config_lib
from petvision import search
from petvision.core import paths as project_paths
from petvision.core.errors import PetvisionError

log = logging.getLogger("petvision")


def _redirect_for_sweep(cfg: config_lib.Config, writes: Sequence[str]) -> None:
    """In a Hydra sweep (-m) each job writes its outputs under its own job folder, so jobs do not
    overwrite each other or the pipeline's DVC outputs. Inputs keep their usual place."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    for name in writes:
        setattr(cfg.paths, name, str(job_dir / name))
    log.info("sweep job %s: outputs under %s", HydraConfig.get().job.num, job_dir)


def main(task: Callable[[config_lib.Config], Any], writes: Sequence[str]) -> None:
    """Run ``task`` as a Hydra application over conf/ (see module docstring)."""
    import hydra
    from omegaconf import DictConfig

    # What the stage module imported stays for the whole run: out of the collector's way, which
    # collects again from here on (petvision/__init__.py).
    gc.freeze()
    gc.enable()

    try:
        conf = project_paths.conf_dir()
    except PetvisionError as exc:
        _fail(exc)

    @hydra.main(version_base="1.3", config_path=str(conf), config_name="config")
    def _app(raw: DictConfig) -> float | None:
        try:
            cfg = config_lib.load(raw)
            _redirect_for_sweep(cfg, writes)
            # A search trial's objective; None outside a search (petvision.search).
            return search.objective_value(task(cfg))
        except PetvisionError as exc:
            if search.active() is not None:
                log.error("%s: %s", type(exc).__name__, exc)
                raise  # a failed trial: the search records it (hydra.sweeper.max_failure_rate)
            _fail(exc)

    _app()


def _fail(exc: PetvisionError) -> NoReturn:
    """One clear line instead of a traceback: the message already names what to fix."""
    log.error("%s: %s", type(exc).__name__, exc)
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
