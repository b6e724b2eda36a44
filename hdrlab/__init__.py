"""hdrlab: a research suite for single-image HDR reconstruction."""

__version__ = "0.1.0"
