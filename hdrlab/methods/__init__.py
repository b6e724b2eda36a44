"""hdrlab.methods."""
