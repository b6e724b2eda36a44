"""hdrlab.sweep."""
