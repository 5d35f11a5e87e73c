"""mmengine pieces of kdplug: hooks (contributed through the plugin hooks), checkpoint loading, and the malloc
settings of its tools."""
