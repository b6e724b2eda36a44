"""Host (CPU) memory checks for commands whose user-given image size drives what they allocate.

:func:`available_memory` reads what the machine can still give (``psutil`` when installed, else
``MemAvailable`` of ``/proc/meminfo``, else free pages from ``os.sysconf``); :func:`check_image_size`
refuses, before anything is allocated or written, a size whose estimated peak exceeds it, naming
the largest size of the same aspect ratio that fits. ``HDRLAB_AVAILABLE_MEMORY`` (e.g. ``2GiB``)
overrides the measured value (tests, shared machines).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hdrlab.budget.units import format_size, parse_size
from hdrlab.errors import ConfigError

__all__ = [
    "AVAILABLE_MEMORY_ENV",
    "USABLE_FRACTION",
    "available_memory",
    "check_image_size",
    "demo_memory",
    "largest_fitting_size",
    "synth_memory",
]

#: environment variable overriding the measured available memory (a size such as ``2GiB``).
AVAILABLE_MEMORY_ENV = "HDRLAB_AVAILABLE_MEMORY"
#: share of the available memory a command may plan to use (the rest: other processes, estimate error).
USABLE_FRACTION = 0.8


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate without swapping, or None if unknown."""
    override = os.environ.get(AVAILABLE_MEMORY_ENV)
    if override:
        try:
            return parse_size(override)
        except ConfigError as err:
            raise ConfigError(f"{AVAILABLE_MEMORY_ENV}={override!r} is not a size; use e.g. 2GiB") from err
    try:
        import psutil  # optional

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None


def largest_fitting_size(height: int, width: int, need: Callable[[int, int], int], limit: int,
                         *, minimum: int = 16) -> tuple[int, int] | None:
    """The largest ``(h, w)`` with the aspect ratio of ``height x width`` (both >= ``minimum``)
    whose ``need(h, w)`` is at most ``limit`` bytes, or None when even the smallest does not fit."""
    def scaled(f: float) -> tuple[int, int]:
        return max(minimum, int(height * f)), max(minimum, int(width * f))

    if need(*scaled(0.0)) > limit:
        return None
    lo, hi = 0.0, 1.0  # need(scaled(lo)) fits, scaled(hi) is the requested size (does not fit)
    for _ in range(40):
        mid = (lo + hi) / 2
        if need(*scaled(mid)) <= limit:
            lo = mid
        else:
            hi = mid
    return scaled(lo)


def check_image_size(height: int, width: int, need: Callable[[int, int], int], *, option: str,
                     what: str, format_size_arg: Callable[[int, int], str], minimum: int = 16) -> None:
    """Raise :class:`ConfigError` when ``need(height, width)`` bytes exceed the usable memory.

    Args:
        height, width: the requested size.
        need: ``(h, w) -> bytes`` the command holds at its peak for that size.
        option: the command-line option that set the size (``--size``).
        what: what is computed, for the message (``"16 scenes"``).
        format_size_arg: ``(h, w) -> option value`` (``"4096x4096"``).
        minimum: the smallest side the option accepts.
    """
    available = available_memory()
    if available is None:
        return
    limit = int(available * USABLE_FRACTION)
    required = need(height, width)
    if required <= limit:
        return
    fit = largest_fitting_size(height, width, need, limit, minimum=minimum)
    advice = (f"the largest that fits is {option} {format_size_arg(*fit)}" if fit is not None
              else f"even {option} {format_size_arg(minimum, minimum)} does not fit; free memory first")
    raise ConfigError(
        f"{option} {format_size_arg(height, width)} needs about {format_size(required)} of memory for {what}, "
        f"more than {USABLE_FRACTION:.0%} of the {format_size(available)} available; {advice}")


#: peak bytes per pixel of rendering one procedural scene (:func:`hdrlab.data.procedural.render_scene`:
#: float32 fields, masks and their temporaries; measured 385-445 at 1-4 Mpx, rounded up).
RENDER_BYTES_PER_PIXEL = 480
#: bytes per pixel of one float32 RGB image.
IMAGE_BYTES_PER_PIXEL = 12
#: peak bytes per pixel of ``hdrlab demo`` beyond its held scenes (bracket synthesis, mergers, previews,
#: figures and evaluation; measured 5.5 k at 768 px, rounded up), and its fixed base (models, libraries).
DEMO_BYTES_PER_PIXEL = 6000
DEMO_BASE_BYTES = 1536 * 2**20
#: bytes per pixel ``hdrlab demo`` keeps per scene until its figures and tables (scene, input, outputs).
DEMO_SCENE_BYTES_PER_PIXEL = 12 * IMAGE_BYTES_PER_PIXEL


def synth_memory(height: int, width: int, count: int) -> int:
    """Peak bytes of ``hdrlab synth``: one scene being rendered plus the ``count`` scenes it keeps for
    the contact sheet."""
    pixels = height * width
    return pixels * (RENDER_BYTES_PER_PIXEL + IMAGE_BYTES_PER_PIXEL * count)


def demo_memory(size: int, scenes: int) -> int:
    """Peak bytes of ``hdrlab demo`` at ``--size size`` with ``scenes`` scenes (one more for the real image)."""
    pixels = size * size
    return DEMO_BASE_BYTES + pixels * (DEMO_BYTES_PER_PIXEL + DEMO_SCENE_BYTES_PER_PIXEL * (scenes + 1))
