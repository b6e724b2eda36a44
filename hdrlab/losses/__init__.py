"""hdrlab.losses."""
