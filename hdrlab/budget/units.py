"""Memory sizes as text: ``"4GiB"`` <-> ``4 * 2**30`` bytes.

Binary units (``KiB``, ``MiB``, ``GiB``, ``TiB``) are powers of 1024; decimal units (``kB``/``KB``,
``MB``, ``GB``, ``TB``) are powers of 1000, so ``"4GB"`` is ``4e9`` bytes, as on a GPU's box. A bare
number (or ``B``) is bytes. Unit letters are case-insensitive except that the ``i`` marks binary.
"""

from __future__ import annotations

import math
import re

from hdrlab.errors import ConfigError

__all__ = ["SIZE_UNITS", "format_size", "parse_size"]

#: unit (lower case) -> bytes.
SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """Parse a memory size into bytes.

    Args:
        text: ``"4GiB"``, ``"512 MiB"``, ``"1.5GB"``, ``"1048576"`` or a number of bytes.

    Returns:
        Bytes, rounded down to an integer, > 0.

    Raises:
        ConfigError: for an unknown unit, a malformed number, or a size <= 0.
    """
    if isinstance(text, bool):
        raise ConfigError(f"memory size {text!r} is not a size; write e.g. '4GiB', '512MiB' or '4GB'")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = _SIZE_RE.match(str(text))
        if match is None:
            raise ConfigError(f"memory size {text!r} is not a number with a unit; write e.g. '4GiB', '512MiB' or '4GB'")
        value, unit = float(match.group(1)), match.group(2).lower()
    if unit not in SIZE_UNITS:
        raise ConfigError(
            f"memory size {text!r} has an unknown unit {unit!r}; use one of B, KiB, MiB, GiB, TiB "
            "(powers of 1024) or kB, MB, GB, TB (powers of 1000)"
        )
    size = math.floor(value * SIZE_UNITS[unit])
    if not math.isfinite(value) or size <= 0:
        raise ConfigError(f"memory size {text!r} must be positive, e.g. '4GiB'")
    return size


def format_size(num_bytes: int | float, *, digits: int = 2) -> str:
    """Format bytes with the largest binary unit that keeps the value >= 1, e.g. ``"3.50 GiB"``.

    Args:
        num_bytes: size in bytes (may be negative for differences).
        digits: decimals.
    """
    value = float(num_bytes)
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = SIZE_UNITS[unit.lower()]
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f} {unit}"
    return f"{int(value)} B"
