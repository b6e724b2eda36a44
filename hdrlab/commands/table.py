"""``hdrlab table``: size and cost of every shipped method at full size, next to published figures.

::

    hdrlab table [--json] [--only NAME ...] [--experiments DIR]

For each experiment file of the checkout's ``experiments/`` folder (``--experiments``; one row per
file, ``--only`` picks by file stem), the method is built at full size and counted exactly as
``hdrlab info`` counts it (:func:`hdrlab.commands.info.describe`: trainable parameters, FLOPs =
2 x MACs of one ``predict_image`` under ``FakeTensorMode``) at the input size the row states. Rows of
the methods in Table 2 of She et al. (DuHDR, seed paper 002; "SIZE" and "FLOPs" columns) show the
published figures, the count of the official code, hdrlab's count, the ratio of the FLOPs, and a
note explaining the differences; their FLOPs are counted at **512 x 512**, the input of the DuHDR
authors' profiling script (a ``1 x 512 x 512 x 3`` placeholder). Other methods are counted at
512 x 512 too (no published figure to compare with).

Output: a Markdown table with the notes below it, or (``--json``) a list of row objects:
``{experiment, method, output_domain, size, params, flops, paper_params, paper_flops,
official_params, official_source, flops_ratio, note}`` (``None`` where a figure does not exist).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hdrlab.errors import ConfigError

__all__ = ["PUBLISHED", "Published", "build_rows", "main", "markdown"]


@dataclass(frozen=True)
class Published:
    """A method's published size and cost (She et al., Table 2) and the official code's count."""

    label: str  #: the method's name in the paper's table
    paper_params: float  #: "SIZE", parameters
    paper_flops: float  #: "FLOPs"
    official_params: int | None  #: trainable parameters of the official code
    official_source: str  #: where that count comes from
    note: str  #: what explains the differences


#: She et al. (DuHDR), Table 2, by hdrlab experiment file stem. The FLOPs of every row were counted
#: at 512 x 512 (the authors' profiling script); the paper does not say how (TF's profiler counts
#: 2 FLOPs per multiply-add).
PUBLISHED: dict[str, Published] = {
    "hdrcnn": Published(
        "HDRCNN", 29.44e6, 242.81e9, 29_443_358, "gabrieleilertsen/hdrcnn network.py (VGG16 encoder, h6, decoder)",
        "Parameters agree; FLOPs agree within 0.3% (both 2 x the multiply-adds of the convolutions at 512x512)."),
    "drtmo": Published(
        "DrTMO", 348.99e6, 3.12e12, 348_995_590, "DrTMO network.py (up- and down-exposure networks, 174,497,795 each)",
        "Parameters agree (both networks). hdrlab counts one pass of each network (each pass outputs the 8 "
        "exposures of its direction: 787.7 G apiece at 512x512) plus the merge, half the paper's 3.12 T; the "
        "paper does not say how it counted (a factor 2 fits two passes per network or 4 FLOPs per multiply-add)."),
    "expandnet": Published(
        "ExpandNet", 0.46e6, 53.4e9, 456_899, "dmarnerides/hdr-expandnet model.py",
        "Parameters agree. The paper's 53.4 G matches the multiply-adds (not 2 x) of one whole-image pass "
        "(53.8 G); hdrlab counts 2 x MACs of the official patch-wise inference (256 px tiles overlapping by "
        "20 px recompute their borders, plus the global branch on a 256x256 resize)."),
    "singlehdr": Published(
        "RCPNet (SingleHDR)", 29.13e6, 451.04e9, 29_036_815,
        "alex04072000/SingleHDR (dequantization, linearization, hallucination, refinement nets)",
        "FLOPs agree within 0.3%. The paper's 29.13 M exceeds the official trainable count by 0.09 M, which no "
        "sub-network of the official code accounts for (the Linearization-Net's 7,040 BatchNorm statistics and "
        "the EMoR basis are far smaller)."),
    "duhdr": Published(
        "DuHDR", 30.81e6, 452.43e9, 30_323_347, "DoomsdayLeaf/DualHDR (Dnet + INnet + ITnet + OOnet of the test script)",
        "The paper counts the inference chain Dnet + INnet + ITnet + OOnet with one ITnet pass and the "
        "differential-net-only OOnet (the configuration of the authors' profiling script): hdrlab counts that "
        "chain as 30,816,527 parameters (paper 30.81 M) and its per-network FLOPs, with the default RFB + "
        "differential-net OOnet, as 37.83 / 54.30 / 320.05 / 30.93 G (paper 37.94 / 54.50 / 320.52 / 39.47 G; "
        "the differential-net-only OOnet is 39.4 G). The row shows the official test script's chain (RFB + "
        "differential net, 30,323,347) with hdrlab's default 3 ITnet passes (one pass: 443.11 G). The dual "
        "networks, used only in training, are in neither count."),
}
#: input side (pixels) of the counts
SIZE = 512


def _experiments_dir(folder: str | None) -> Path:
    if folder is not None:
        path = Path(folder)
    else:
        from hdrlab.sweep.overrides import checkout_root

        root = checkout_root()
        path = (root / "experiments") if root is not None else Path("experiments")
    if not path.is_dir():
        raise ConfigError(f"experiments folder {path} does not exist; run from a source checkout or pass --experiments DIR")
    return path


def build_rows(experiments: Path, *, only: list[str] | None = None, size: int = SIZE) -> list[dict[str, Any]]:
    """One row per experiment file of ``experiments`` (``only``: by file stem), counted with
    :func:`hdrlab.commands.info.describe` at ``size x size``.

    Raises:
        ConfigError: a name of ``only`` has no experiment file.
    """
    from hdrlab.commands.info import describe

    files = sorted(experiments.glob("*.yaml"))
    if only:
        stems = {f.stem for f in files}
        missing = [n for n in only if n not in stems]
        if missing:
            raise ConfigError(f"no experiment file for {missing} in {experiments}; choose from {sorted(stems)}")
        files = [f for f in files if f.stem in only]
    rows = []
    for path in files:
        info = describe([str(path)], size=size)
        ref = PUBLISHED.get(path.stem)
        rows.append({
            "experiment": path.stem,
            "method": ref.label if ref else info["method"],
            "output_domain": info["output_domain"],
            "size": f"{size}x{size}",
            "params": info["parameters"]["total"],
            "flops": info["flops"],
            "paper_params": ref.paper_params if ref else None,
            "paper_flops": ref.paper_flops if ref else None,
            "official_params": ref.official_params if ref else None,
            "official_source": ref.official_source if ref else None,
            "flops_ratio": info["flops"] / ref.paper_flops if ref else None,
            "note": ref.note if ref else None,
        })
    # the paper's rows first, in its order
    order = {stem: i for i, stem in enumerate(PUBLISHED)}
    rows.sort(key=lambda r: (order.get(r["experiment"], len(order)), r["experiment"]))
    return rows


def _si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "params":
        return f"{value / 1e6:.2f} M"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f}{unit}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, the notes numbered below it."""
    lines = [
        f"Trainable parameters and FLOPs (2 x multiply-adds, one prediction at {rows[0]['size'] if rows else SIZE}, "
        "counted by hdrlab under FakeTensorMode) of every shipped method at full size; paper: She et al. (DuHDR), "
        "Table 2 (SIZE, FLOPs; counted at 512x512).",
        "",
        "| experiment | method | params (hdrlab) | params (official code) | params (paper) | FLOPs (hdrlab) "
        "| FLOPs (paper) | hdrlab / paper FLOPs | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    notes = []
    for row in rows:
        mark = ""
        if row["note"]:
            notes.append(f"{len(notes) + 1}. {row['method']}: {row['note']} (official count: {row['official_source']})")
            mark = f"[{len(notes)}]"
        official = "-" if row["official_params"] is None else f"{row['official_params']:,}"
        ratio = "-" if row["flops_ratio"] is None else f"{row['flops_ratio']:.2f}"
        lines.append(f"| {row['experiment']} | {row['method']} | {row['params']:,} | {official} "
                     f"| {_si(row['paper_params'], 'params')} | {_si(row['flops'])} | {_si(row['paper_flops'])} | {ratio} | {mark} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hdrlab table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="experiment file stems to count (default: every file of the folder)")
    parser.add_argument("--experiments", default=None, help="folder of experiment files (default: the checkout's)")
    args = parser.parse_args(argv)
    rows = build_rows(_experiments_dir(args.experiments), only=args.only)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows), end="" if not args.json else "\n")
    return 0

