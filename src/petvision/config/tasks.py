"""One task's slice of the configuration, typed: :class:`TaskConfig`, what training, tracking,
inference, export and visualize know about a task, built by ``task_config(cfg, Task.<task>)``.

This is the one table of what differs between the two tasks and is not a configuration key:
which stage trains a task and the file its model is kept in. Everything else comes from the
configuration's sections of that task (``data.<task>``, ``<task>.model``, ``<task>.train``,
``tracking.experiments.<task>``, ``tracking.registered_models.<task>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar, overload

from petvision.config.architectures import Architecture, lookup
from petvision.config.schema import (
    ClassificationDataConfig,
    ClassificationModelConfig,
    Config,
    PathsConfig,
    SegmentationDataConfig,
    SegmentationModelConfig,
    TrainConfig,
)
from petvision.core.tasks import Task

# The stage (python -m petvision.<stage>, a dvc.yaml stage) that trains each task ...
TRAINING_STAGES = {Task.segmentation: "train_segmentation", Task.classification: "train_xception"}
# ... and the file under paths.models where it keeps the best model (a DVC output).
MODEL_FILES = {Task.segmentation: "segmentation.keras", Task.classification: "classifier.keras"}

DataT = TypeVar("DataT", SegmentationDataConfig, ClassificationDataConfig)
ModelT = TypeVar("ModelT", SegmentationModelConfig, ClassificationModelConfig)


@dataclass(frozen=True)
class TaskConfig(Generic[DataT, ModelT]):
    """Everything one task is configured with, and where its outputs go."""

    task: Task
    data: DataT  # data.<task>: image size, split sizes, the resize interpolation
    model: ModelT  # <task>.model
    train: TrainConfig  # <task>.train
    experiment: str  # tracking.experiments.<task>: the MLflow experiment of its training runs
    registered_model: str  # tracking.registered_models.<task>
    paths: PathsConfig  # the project's folders (resolved when asked: see model_file)

    @property
    def stage(self) -> str:
        """The stage that trains this task."""
        return TRAINING_STAGES[self.task]

    @property
    def model_file(self) -> Path:
        """Where that stage keeps the best model (a DVC output), absolute."""
        return self.paths.resolve("models") / MODEL_FILES[self.task]

    @property
    def reports(self) -> Path:
        """That stage's report folder: metrics, history, pictures (DVC outputs), absolute."""
        return self.paths.resolve("reports") / self.task

    @property
    def architecture(self) -> Architecture:
        """The configured model's entry in :mod:`petvision.config.architectures`."""
        return lookup(self.task, self.model.name)


SegmentationTask = TaskConfig[SegmentationDataConfig, SegmentationModelConfig]
ClassificationTask = TaskConfig[ClassificationDataConfig, ClassificationModelConfig]


@overload
def task_config(cfg: Config, task: Literal[Task.segmentation]) -> SegmentationTask: ...
@overload
def task_config(cfg: Config, task: Literal[Task.classification]) -> ClassificationTask: ...
@overload
def task_config(cfg: Config, task: Task) -> TaskConfig: ...
def task_config(cfg: Config, task: Task) -> TaskConfig:
    """``task``'s configuration. It holds the config's own sections, not copies: a sweep job's
    redirected paths (:mod:`petvision.cli.stage`) are the ones it resolves."""
    task = Task(task)
    # The config's sections are named after the task (conf/: data.<task>, <task>.model, ...).
    return TaskConfig(
        task,
        getattr(cfg.data, task.value),
        getattr(cfg, task.value).model,
        getattr(cfg, task.value).train,
        getattr(cfg.tracking.experiments, task.value),
        getattr(cfg.tracking.registered_models, task.value),
        cfg.paths,
    )
