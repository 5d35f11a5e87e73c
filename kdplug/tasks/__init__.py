"""Downstream tasks: what the distiller asks of a family of models (see :mod:`kdplug.tasks.base`)."""
