"""The two tasks of the chapter: the pet/background/border segmentation and the cats-vs-dogs
classification.

A :class:`Task` is a ``StrEnum``: its values are the words ``conf/``, ``params.yaml``, dvc.yaml,
the ``.npy`` folders and MLflow use (``segmentation``, ``classification``), and a member compares,
hashes, formats and serializes as that word. Code names a task by its member, never by the bare
word; what a task's configuration holds is :class:`petvision.config.tasks.TaskConfig`.
"""

from __future__ import annotations

from enum import StrEnum, auto


class Task(StrEnum):
    # auto(): a StrEnum member's value is its name
    segmentation = auto()
    classification = auto()
