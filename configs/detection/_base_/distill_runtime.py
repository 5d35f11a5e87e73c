# Detection distillation runs: mmdet's runtime (default_scope 'mmdet'), plus the teacher evaluated once before
# training (a wrong checkpoint shows in the first log lines).
_base_ = 'mmdet::_base_/default_runtime.py'

custom_hooks = [dict(type='kdplug.TeacherEvalHook')]
# mmengine's CheckpointHook with crash-safe writes (write, rename, then remove old ones)
default_hooks = dict(checkpoint=dict(type='kdplug.AtomicCheckpointHook', interval=1))
