"""hdrlab.models.direct."""
