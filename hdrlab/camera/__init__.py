"""hdrlab.camera."""
