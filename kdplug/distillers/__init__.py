"""The distiller: an mmengine model that composes a task, a teacher source and losses (see
:mod:`kdplug.distillers.distiller`); the student export."""
