# Detection distillation runs: mmdet's runtime (default_scope 'mmdet'), plus kdplug's hooks of the classification
# runtime: the teacher evaluated once before training (a wrong checkpoint shows in the first log lines), the teacher
# source shown the run's training data and classes (a teacher checkpoint of other classes, or of the same classes in
# another order, is refused before the first step; default hooks, so a config's own custom_hooks keep them) and the
# random state kept in every checkpoint (a resumed run draws the augmentations an uninterrupted one draws, with
# workers that are not persistent, as in the coco128 configs; mmdet's COCO settings keep theirs, and a resume
# says that its augmentations differ).
_base_ = 'mmdet::_base_/default_runtime.py'

custom_hooks = [dict(type='kdplug.TeacherEvalHook')]
default_hooks = dict(
    checkpoint=dict(type='kdplug.AtomicCheckpointHook', interval=1),  # crash-safe writes (write, rename, remove)
    teacher_data=dict(type='kdplug.TeacherDataCheckHook'),
    random_state=dict(type='kdplug.RandomStateHook'))
