"""hdrlab.commands."""
