"""An example third-party kdplug plugin package: a semantic segmentation task for mmsegmentation."""
