"""``hdrlab info``: full-size trainable parameter counts (from the official code) and FakeTensor FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hdrlab.cli import main
from hdrlab.commands.info import describe

REPO = Path(__file__).resolve().parents[1]
EXP = REPO / "experiments"


def test_singlehdr_counts_and_flops(capsys):
    """Official SingleHDR code (alex04072000/SingleHDR ``*_net.py``): 1,999,779 / 1,200,971 / 24,569,118 /
    1,266,947; ~450 GFLOPs at 512^2."""
    assert main(["info", "--config", str(EXP / "singlehdr.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["subnetworks"] == {
        "dequantization": 1_999_779, "linearization": 1_200_971,
        "hallucination": 24_569_118, "refinement": 1_266_947,
    }
    assert info["parameters"]["total"] == 29_036_815
    assert abs(info["flops"] / 450e9 - 1) < 0.03


def test_le2023_count():
    """Official code (VinAIResearch/single_image_hdr ``src/models/ednet.py``): 62,194,875 trainable parameters."""
    info = describe([str(EXP / "le2023.yaml")])
    assert info["parameters"]["total"] == 62_194_875
    assert info["flops"] > 0


@pytest.mark.parametrize("scale,expected", [(2, 17_048_297), (4, 28_975_849)])
def test_cfnet_counts(tmp_path, scale, expected):
    """Official CF-Net (ytZhang99/CF-Net ``model.py``): x2 17,048,297 and x4 28,975,849; FLOPs at a 512x512 output."""
    override = tmp_path / "scale.yaml"
    override.write_text(f"model:\n  init_args:\n    scale: {scale}\n")
    info = describe([str(EXP / "cfnet.yaml"), str(override)])
    assert info["parameters"]["total"] == expected
    assert info["output_domain"] == "display" and info["flops"] > 0


@pytest.mark.parametrize("experiment,expected", [
    ("kalantari2017.yaml", 383_909),  # WE, the released variant (Direct 383,603, WIE 384,368)
    ("wu2018.yaml", 16_606_339),
    ("ahdrnet.yaml", 1_441_283),  # the official class's unused attConv1/3 (73,856) are not built
])
def test_learned_merger_counts(experiment, expected):
    """The learned three-exposure mergers at full size, one sub-network each, linear output."""
    info = describe([str(EXP / experiment)])
    assert info["parameters"]["total"] == expected
    assert list(info["parameters"]["subnetworks"].values()) == [expected]
    assert info["output_domain"] == "linear" and info["flops"] > 0


def test_dotted_model_overrides_on_the_command_line(capsys):
    for form in (["--model.init_args.scale", "4"], ["--model.init_args.scale=4"]):
        assert main(["info", "--config", str(EXP / "cfnet.yaml"), *form, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["parameters"]["total"] == 28_975_849
    assert main(["info", "--config", str(EXP / "cfnet.yaml"), "--trainer.max_steps", "3"]) == 2
    assert "unknown argument '--trainer.max_steps'" in capsys.readouterr().err


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    assert main(["info", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
