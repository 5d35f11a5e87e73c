"""Teacher sources: where the teacher's logits come from (see :mod:`kdplug.teachers.base`)."""
