"""Error types shared across hdrlab.

Every user-facing failure (bad file, bad config, impossible combination) raises a
subclass of :class:`HDRLabError` whose message names the offending thing and the fix.
The command line prints such errors without a traceback and exits with status 2;
:class:`RunFailure` (a run stopped for a reason found while it ran) gives one line and status 1.
"""

from __future__ import annotations


class HDRLabError(Exception):
    """Base class of errors caused by user input (files, configs, arguments)."""


class HDRIOError(HDRLabError):
    """A file could not be read or written; the message names the file and the problem."""


class ConfigError(HDRLabError):
    """A configuration value or combination is invalid; the message names the key and the fix."""


class RunFailure(RuntimeError):
    """A run stopped for a reason found while it ran (e.g. a non-finite loss), not a bug and not a
    bad input; the message names what and where. The command line prints it in one line, exit 1."""


class WeightsMissingError(HDRLabError):
    """An optional pretrained file is not in the torch hub cache; the message names file and folder."""
