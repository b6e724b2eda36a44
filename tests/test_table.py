"""``hdrlab table``: full-size counts of the shipped methods next to She et al.'s Table 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdrlab.cli import main
from hdrlab.commands.table import PUBLISHED, build_rows, markdown
from hdrlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_rows_count_at_full_size_next_to_the_paper(capsys):
    assert main(["table", "--json", "--only", "expandnet", "drtmo", "baseline_inverse_crf",
                 "--experiments", str(REPO / "experiments")]) == 0
    rows = {row["experiment"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["drtmo", "expandnet", "baseline_inverse_crf"]  # the paper's order, then the rest
    assert rows["expandnet"]["params"] == rows["expandnet"]["official_params"] == 456_899
    assert rows["drtmo"]["params"] == rows["drtmo"]["official_params"] == 348_995_590
    assert rows["expandnet"]["paper_params"] == 0.46e6 and rows["drtmo"]["paper_flops"] == 3.12e12
    assert rows["expandnet"]["size"] == "512x512" and rows["expandnet"]["flops"] == 134_180_423_680
    assert rows["expandnet"]["flops_ratio"] == pytest.approx(134.18042368 / 53.4, rel=1e-9)
    assert rows["baseline_inverse_crf"]["paper_params"] is None and rows["baseline_inverse_crf"]["note"] is None


def test_markdown_numbers_the_notes():
    rows = build_rows(REPO / "experiments", only=["expandnet"])
    text = markdown(rows)
    assert "| expandnet | ExpandNet | 456,899 | 456,899 | 0.46 M | 134.18 G | 53.40 G | 2.51 | [1] |" in text
    assert f"1. ExpandNet: {PUBLISHED['expandnet'].note}" in text


def test_unknown_experiment_is_one_line():
    with pytest.raises(ConfigError, match="no experiment file for \\['nope'\\]"):
        build_rows(REPO / "experiments", only=["nope"])


def test_duhdr_note_matches_the_counts_of_the_paper_configuration():
    """The figures the DuHDR note quotes: one ITnet pass, and the differential-net-only OOnet."""
    from hdrlab.commands.info import describe

    one_pass = describe([str(REPO / "experiments" / "duhdr.yaml")], overrides=["model.init_args.iterations=1"])
    assert one_pass["flops"] == 443_111_998_464 and one_pass["parameters"]["total"] == 30_323_347
    diff_only = describe([str(REPO / "experiments" / "duhdr.yaml")], overrides=["model.init_args.rfb=false"])
    assert diff_only["parameters"]["total"] == 30_816_527
    note = PUBLISHED["duhdr"].note
    assert "30,816,527" in note and "443.11 G" in note and "30,323,347" in note
