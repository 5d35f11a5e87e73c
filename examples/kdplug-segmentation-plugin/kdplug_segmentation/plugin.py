"""Entry point ``kdplug = segmentation = kdplug_segmentation.plugin``: kdplug calls these hooks when it loads
plugins. The task is imported inside the hook (nothing of it runs until kdplug asks), and the task imports mmseg
only when a model is built in its scope."""
from kdplug import hookimpl


@hookimpl
def kdplug_tasks():
    from kdplug_segmentation.task import SemanticSegmentationTask
    return [SemanticSegmentationTask]
