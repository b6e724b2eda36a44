"""The real entry points: ``python -m hdrlab`` dispatch and a one-scene ``hdrlab demo``."""

from __future__ import annotations

import json
import subprocess
import sys

from hdrlab.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_a_clear_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err


def test_user_errors_exit_2_without_traceback(capsys):
    assert main(["demo", "--scenes", "0"]) == 2
    err = capsys.readouterr().err
    assert "hdrlab demo: error:" in err and "Traceback" not in err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "hdrlab", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: hdrlab" in proc.stdout and "fit" in proc.stdout


def test_demo_one_scene_end_to_end(tmp_path, real_hdr_dir, monkeypatch, capsys):
    """The demo on one procedural scene plus the real image: files, table and honest ordering."""
    monkeypatch.setenv("HDRLAB_DATA", str(real_hdr_dir.parent))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "1", "--size", "128", "--no_sweep",
                 "--learned_samples", "8"]) == 0
    printed = capsys.readouterr().out
    assert "| Debevec (bracket, CRF recovered) |" in printed and "real_" in printed
    for folder in ("gt", "input", "debevec", "debevec_known_crf", "inverse_crf", "linear_itmo", "le2023_debevec_demo",
                   "expandnet_official"):
        assert len(list((out / folder).glob("*.exr" if folder != "input" else "*.png"))) == 2
    assert len(list((out / "previews").glob("*_panel.png"))) == 2
    # one labelled comparison figure for the procedural scene and one for the real scene
    comparisons = sorted(p.name for p in (out / "previews").glob("*_comparison.png"))
    assert len(comparisons) == 2 and comparisons[0].startswith("real_") and comparisons[1] == "scene_0000_comparison.png"
    assert "comparison figures (" in printed
    assert (out / "learned" / "checkpoints" / "last.ckpt").is_file()  # the single-image model the demo trained
    # the official ExpandNet weights of $HDRLAB_DATA, imported once and run with the official inference
    assert (out / "expandnet" / "expandnet_official.ckpt").is_file() and "| ExpandNet, official weights" in printed
    scores = json.loads((out / "results.json").read_text())
    assert set(scores["display"]) == {*scores["radiance"], "mertens"}
    assert all(0 < row["display_psnr"] < 100 for row in scores["display"].values())
    table = scores["radiance"]
    # merging a +-4 EV bracket recovers clipped regions that a single LDR cannot
    assert table["debevec_known_crf"]["pu21_psnr_clipped"] > table["inverse_crf"]["pu21_psnr_clipped"] + 3.0
    assert table["debevec"]["pu21_psnr_clipped"] > table["inverse_crf"]["pu21_psnr_clipped"] + 3.0
