"""kdplug's own teacher sources, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_teachers() -> List[type]:
    from kdplug.teachers.cached import CachedTeacher
    from kdplug.teachers.checkpoint import CheckpointTeacher
    from kdplug.teachers.ema import EMATeacher
    from kdplug.teachers.weak_head import WeakHeadTeacher
    return [CheckpointTeacher, EMATeacher, WeakHeadTeacher, CachedTeacher]
