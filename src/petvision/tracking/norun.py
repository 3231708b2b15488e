"""A run that logs nothing, with :class:`~petvision.tracking.run.Run`'s methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class NoRun:
    """A run that logs nothing: what non-chief workers (and code paths without tracking) use,
    so that callers need no ``if`` around each log call."""

    def __init__(self) -> None:
        self.run_id = ""
        self.experiment_id = ""
        self.uri = ""
        self.resumed = False
        self.lost: list[str] = []

    def __enter__(self) -> NoRun:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def logged_steps(self, key: str) -> set[int] | None:
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_input_dataset(
        self, name: str, digest: str, source: str, context: str, shape_info: dict | None = None
    ) -> None:
        pass

    def log_keras_model(
        self, model: Any, example: np.ndarray, name: str = "model", extra_files: Any = ()
    ) -> str:
        return ""

    def keras_callback(self) -> Any:
        import keras

        return keras.callbacks.Callback()
