"""hdrlab.models.blocks."""
