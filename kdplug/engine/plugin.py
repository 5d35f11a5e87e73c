"""kdplug's own mmengine hooks, contributed through the plugin hooks."""
from typing import List

from kdplug import hookimpl


@hookimpl
def kdplug_engine_hooks() -> List[type]:
    from kdplug.engine.hooks import AtomicCheckpointHook, EMATeacherHook, LossWarmupHook, TeacherEvalHook
    from kdplug.engine.hooks import CTKDCurriculumHook, RandomStateHook, TeacherDataCheckHook
    return [LossWarmupHook, TeacherEvalHook, EMATeacherHook, AtomicCheckpointHook, CTKDCurriculumHook,
            TeacherDataCheckHook, RandomStateHook]
