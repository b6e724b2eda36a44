"""hdrlab.data."""
