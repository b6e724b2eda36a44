"""hdrlab.metrics."""
