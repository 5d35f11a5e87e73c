"""mmengine pieces of kdplug: hooks (contributed through the plugin hooks) and checkpoint loading."""
