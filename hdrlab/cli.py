"""The ``hdrlab`` command line.

``hdrlab <subcommand> ...``. Utility subcommands (``weights``, ``synth``, ``eval``,
``merge``, ``demo``) live in :mod:`hdrlab.commands`, one module each with a
``main(argv) -> int`` function; they are imported lazily so ``hdrlab --help`` stays fast.
User errors (:class:`hdrlab.errors.HDRLabError`) are printed without a traceback and exit 2.
"""

from __future__ import annotations

import importlib
import sys

from hdrlab.errors import HDRLabError

#: subcommand -> (module, one-line help). Explicit on purpose: no folder scanning.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("hdrlab.commands.weights", "list/verify optional pretrained trunks (VGG16/VGG19/AlexNet)"),
    "synth": ("hdrlab.commands.synth", "write procedural HDR scenes (.exr) and a contact sheet"),
    "eval": ("hdrlab.commands.evaluate", "score predicted HDR images against ground truth"),
    "merge": ("hdrlab.commands.merge", "merge a real bracket (Debevec radiance or Mertens fusion)"),
    "demo": ("hdrlab.commands.demo", "the end-to-end demo on the embedded procedural data"),
}


def _usage() -> str:
    lines = ["usage: hdrlab <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run 'hdrlab <subcommand> --help' for the options of one subcommand."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"hdrlab: unknown subcommand {name!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except HDRLabError as err:
        print(f"hdrlab {name}: error: {err}", file=sys.stderr)
        return 2
