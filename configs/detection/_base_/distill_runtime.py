# Detection distillation runs: mmdet's runtime (default_scope 'mmdet'), plus the teacher evaluated once before
# training (a wrong checkpoint shows in the first log lines).
_base_ = 'mmdet::_base_/default_runtime.py'

custom_hooks = [dict(type='kdplug.TeacherEvalHook')]
