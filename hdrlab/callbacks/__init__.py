"""hdrlab.callbacks."""
