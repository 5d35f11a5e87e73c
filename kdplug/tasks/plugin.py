"""kdplug's own tasks, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_tasks() -> List[type]:
    from kdplug.tasks.classification import ClassificationTask
    from kdplug.tasks.detection import TwoStageDetectionTask
    return [ClassificationTask, TwoStageDetectionTask]
