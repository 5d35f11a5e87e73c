"""Data transforms of kdplug (contributed through the ``kdplug_transforms`` plugin hook)."""
