"""``hdrlab weights check [--json]``: list the optional pretrained files and verify their sha256.

Exit status: 0 when every present file matches the sha256 prefix in its name (missing files
are fine: they are optional), 1 when a present file does not match.
"""

from __future__ import annotations

import argparse
import json

from hdrlab.weights import WeightStatus, check_weights, weights_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hdrlab weights",
        description="List and verify the optional pretrained files (VGG16/VGG19/AlexNet/SqueezeNet). Nothing is downloaded.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="show where each file goes and whether it is present and intact")
    check.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    return parser


def _status_text(status: WeightStatus) -> str:
    if not status.present:
        return "missing (optional)"
    return "ok" if status.sha256_ok else "SHA256 MISMATCH"


def _print_table(statuses: list[WeightStatus]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pretrained files in {weights_dir()}")
    for col in ("file", "purpose", "location", "status"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        style = "green" if s.sha256_ok else ("red" if s.present else "yellow")
        table.add_row(s.filename, s.purpose, str(s.path), f"[{style}]{_status_text(s)}[/{style}]")
    console = Console(width=160)
    console.print(table)
    if any(not s.present for s in statuses):
        console.print(
            "Missing files are optional. To enable them, copy the official torchvision files unrenamed "
            f"into {weights_dir()} (hdrlab never downloads)."
        )


def main(argv: list[str]) -> int:
    """Runs ``hdrlab weights``; returns 1 when a present file fails its sha256 check, else 0."""
    args = _parser().parse_args(argv)
    statuses = check_weights()
    if args.json:
        print(json.dumps({"folder": str(weights_dir()), "files": [s.to_json() for s in statuses]}, indent=2))
    else:
        _print_table(statuses)
    return 1 if any(s.present and not s.sha256_ok for s in statuses) else 0
