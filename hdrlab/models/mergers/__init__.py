"""hdrlab.models.mergers."""
