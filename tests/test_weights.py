"""Tests for hdrlab.weights and ``hdrlab weights check``: nothing downloads, hashes are verified."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

from hdrlab import weights as hw
from hdrlab.cli import main as cli_main
from hdrlab.errors import ConfigError, WeightsMissingError


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under tmp_path; returns its ``checkpoints`` folder (created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # undo any torch.hub.set_dir from elsewhere
    folder = hw.weights_dir()
    assert folder == tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def _bytes_with_prefix_name(folder: Path, stem: str, data: bytes) -> Path:
    prefix = hashlib.sha256(data).hexdigest()[:8]
    path = folder / f"{stem}-{prefix}.pth"
    path.write_bytes(data)
    return path


def test_hash_prefix_parses_torchvision_names():
    assert hw.hash_prefix("vgg16-397923af.pth") == "397923af"
    assert hw.hash_prefix("alexnet-owt-7be5be79.pth") == "7be5be79"
    assert hw.hash_prefix("/x/y/vgg19-dcbb9e9d.pth") == "dcbb9e9d"
    assert hw.hash_prefix("vgg16.pth") is None
    assert hw.hash_prefix("vgg16-xyz12345.pth") is None


def test_sha256_file_matches_hashlib(tmp_path: Path):
    data = os.urandom(3 << 20)  # several chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert hw.sha256_file(path, chunk_size=1 << 20) == hashlib.sha256(data).hexdigest()


def test_crafted_name_with_true_prefix_passes_and_random_fails(tmp_path: Path):
    good = _bytes_with_prefix_name(tmp_path, "thing", b"hdrlab test payload")
    assert hw.file_matches_hash_prefix(good)
    bad = tmp_path / "vgg16-397923af.pth"
    bad.write_bytes(os.urandom(4096))
    assert not hw.file_matches_hash_prefix(bad)
    unnamed = tmp_path / "vgg16.pth"
    unnamed.write_bytes(b"x")
    assert not hw.file_matches_hash_prefix(unnamed)


def test_check_weights_missing_and_random_file(hub: Path):
    statuses = {s.name: s for s in hw.check_weights()}
    assert set(statuses) == {"vgg16", "vgg16_bn", "vgg19", "alexnet", "squeezenet1_1"}
    assert all(not s.present and not s.sha256_ok for s in statuses.values())
    assert statuses["vgg16"].path == hub / "vgg16-397923af.pth"

    (hub / "vgg16-397923af.pth").write_bytes(os.urandom(1 << 16))
    statuses = {s.name: s for s in hw.check_weights()}
    assert statuses["vgg16"].present and not statuses["vgg16"].sha256_ok


def test_require_weights_missing_names_file_folder_and_fix(hub: Path):
    with pytest.raises(WeightsMissingError) as err:
        hw.require_weights("vgg19")
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and str(hub) in msg and "never downloads" in msg
    with pytest.raises(ConfigError):
        hw.require_weights("resnet50")


def test_require_weights_rejects_random_file_with_official_name(hub: Path):
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(os.urandom(1 << 16))
    with pytest.raises(WeightsMissingError, match="7be5be79"):
        hw.require_weights("alexnet")


def test_require_weights_accepts_matching_file(hub: Path, monkeypatch: pytest.MonkeyPatch):
    good = _bytes_with_prefix_name(hub, "vgg16", b"stand-in for the official file")
    entry = hw.KNOWN_WEIGHTS["vgg16"]
    monkeypatch.setitem(hw.KNOWN_WEIGHTS, "vgg16", hw.KnownWeights(entry.name, good.name, entry.purpose, entry.url))
    assert hw.require_weights("vgg16") == good
    assert hw.require_weights(good.name) == good


def test_load_vgg_features_random_trunk_needs_no_file(hub: Path):
    features = hw.load_vgg_features("vgg19", pretrained=False)
    assert isinstance(features, torch.nn.Sequential)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in features) == 16
    # same layout and state-dict keys as torchvision's full model (built on the meta device: no cost)
    with torch.device("meta"):
        tv = torchvision.models.vgg19(weights=None).features
    assert [(k, tuple(v.shape)) for k, v in features.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in tv.state_dict().items()
    ]
    assert features(torch.rand(1, 3, 32, 32)).shape == (1, 512, 1, 1)
    with pytest.raises(WeightsMissingError):
        hw.load_vgg_features("vgg16", pretrained=True)
    with pytest.raises(ConfigError):
        hw.load_vgg_features("vgg11", pretrained=False)


def test_load_vgg_features_loads_checked_state_dict(hub: Path, monkeypatch: pytest.MonkeyPatch):
    # A torchvision-format state dict (features only, to keep the file ~59 MB) under a hash-true name.
    reference = hw.load_vgg_features("vgg16", pretrained=False)
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    tmp = hub / "tmp.pth"
    torch.save(state, tmp)
    prefix = hw.sha256_file(tmp)[:8]
    final = hub / f"vgg16-{prefix}.pth"
    tmp.rename(final)
    entry = hw.KNOWN_WEIGHTS["vgg16"]
    monkeypatch.setitem(hw.KNOWN_WEIGHTS, "vgg16", hw.KnownWeights(entry.name, final.name, entry.purpose, entry.url))
    loaded = hw.load_vgg_features("vgg16", pretrained=True)
    assert not loaded.training
    for (k, a), (_, b) in zip(loaded.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_cli_json_and_exit_codes(hub: Path, capsys: pytest.CaptureFixture[str]):
    assert cli_main(["weights", "check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["folder"] == str(hub)
    assert {f["filename"] for f in report["files"]} == {
        "vgg16-397923af.pth",
        "vgg16_bn-6c64b313.pth",
        "vgg19-dcbb9e9d.pth",
        "alexnet-owt-7be5be79.pth",
        "squeezenet1_1-b8a52dc0.pth",
    }
    assert not any(f["present"] for f in report["files"])

    (hub / "vgg16-397923af.pth").write_bytes(os.urandom(1024))
    assert cli_main(["weights", "check", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    vgg16 = next(f for f in report["files"] if f["name"] == "vgg16")
    assert vgg16["present"] is True and vgg16["sha256_ok"] is False


def test_cli_table(hub: Path, capsys: pytest.CaptureFixture[str]):
    assert cli_main(["weights", "check"]) == 0
    out = capsys.readouterr().out
    assert "alexnet-owt-7be5be79.pth" in out and "missing" in out
