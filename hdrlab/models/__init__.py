"""hdrlab.models."""
