"""hdrlab.budget."""
