# Distillation runs: the runtime above, plus the teacher evaluated once before training (a wrong checkpoint
# shows in the first log lines).
_base_ = ['./default_runtime.py']

custom_hooks = [dict(type='kdplug.TeacherEvalHook')]
