"""A configured model name to its builder function. The names and what each architecture's
layers are called live in :mod:`petvision.config.architectures` (Keras-free, read by the
configuration's checks); this module only turns an entry into the function that builds it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from petvision.config import architectures
from petvision.core.tasks import Task


def builder(task: Task, name: str) -> Callable[..., Any]:
    """The builder function (imports Keras on first use)."""
    module, function = architectures.lookup(task, name).builder.split(":")
    return getattr(importlib.import_module(f"petvision.models.{module}"), function)
