"""Entry point ``kdplug = example = kdplug_example.plugin``: kdplug calls these hooks when it loads plugins."""
from kdplug import hookimpl


@hookimpl
def kdplug_losses():
    from kdplug_example.reverse_kd import ReverseKDLoss
    return [ReverseKDLoss]
