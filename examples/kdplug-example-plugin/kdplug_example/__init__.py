"""An example third-party kdplug plugin package."""
