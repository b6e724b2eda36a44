"""hdrlab.models.generators."""
