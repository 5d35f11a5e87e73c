# Distillation runs: the runtime above, plus the teacher source shown the run's training data before training (a
# teacher cache made from another pipeline or dataset is refused there; a default hook, so a config's own custom_hooks
# keep it) and the teacher evaluated once before training (a wrong checkpoint shows in the first log lines).
_base_ = ['./default_runtime.py']

default_hooks = dict(teacher_data=dict(type='kdplug.TeacherDataCheckHook'))
custom_hooks = [dict(type='kdplug.TeacherEvalHook')]
