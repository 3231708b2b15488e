"""The one MLflow helper every stage uses: :mod:`.store` decides where runs go and checks that
the store can be used; :class:`.run.Run` is one stage's run (see :mod:`petvision.tracking.run`)."""

from petvision.tracking.context import TASK_TAG
from petvision.tracking.run import Run
from petvision.tracking.scope import runs_tagged
from petvision.tracking.store import check_reachable, tracking_uri, ui_url

__all__ = [
    "TASK_TAG",
    "Run",
    "check_reachable",
    "runs_tagged",
    "tracking_uri",
    "ui_url",
]
