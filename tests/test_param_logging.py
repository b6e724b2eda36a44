"""Trainable parameter counts (total and per sub-network) are logged to every logger of a run when
training starts: the CSV logger's ``hparams.yaml`` and the W&B run's config and summary (read back
from the offline run's ``.wandb`` transaction log), through the real ``hdrlab fit`` entry point."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import yaml

from hdrlab.callbacks.run_artifacts import parameter_counts, parameter_hparams
from hdrlab.cli import build_cli

REPO = Path(__file__).resolve().parents[1]
PLUMBING = str(REPO / "tests" / "support" / "plumbing.yaml")
TINY = str(REPO / "experiments" / "overrides" / "tiny.yaml")
#: the plumbing method's two 3x3 convolutions at width 1/8: 3 -> 2 -> 3 channels, with biases
PLUMBING_PARAMETERS = (3 * 9 * 2 + 2) + (2 * 9 * 3 + 3)

pytestmark = pytest.mark.usefixtures("single_thread")


def wandb_records(path: Path) -> list[bytes]:
    """Raw protobuf records of a W&B ``.wandb`` file.

    The file is a 7-byte header (``:W&B``, magic 0xBEE1, version 0) followed by LevelDB-log
    blocks of 32 KiB; each chunk is ``crc32 (4) | length (2, LE) | type (1) | data`` with type
    1 = full, 2 = first, 3 = middle, 4 = last.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    return records


def logged_wandb_items(run_dir: Path) -> dict[str, dict[str, str]]:
    """``{"config": {key: value_json}, "summary": {...}}`` of every config/summary update in the run."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    items: dict[str, dict[str, str]] = {"config": {}, "summary": {}}
    for raw in wandb_records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "config":
            items["config"].update({u.key: u.value_json for u in record.config.update})
        elif kind == "summary":
            items["summary"].update({u.key: u.value_json for u in record.summary.update})
        elif kind == "run":
            items["config"].update({u.key: u.value_json for u in record.run.config.update})
    return items


def test_parameter_counts_total_and_per_subnetwork():
    from hdrlab.methods import CFNetMethod, TwoStage
    from hdrlab.models.generators import Le2023Generator
    from hdrlab.models.mergers import CFNetMerger

    assert parameter_counts(CFNetMethod()) == {"total": 17_048_297, "cfnet": 17_048_297}  # official x2 (ytZhang99/CF-Net model.py)
    frozen = TwoStage(generator=Le2023Generator(width=0.125, ev=(-2.0, 2.0), levels=4),
                      merger=CFNetMerger(width=0.125), mode="freeze_generator")
    counts = parameter_counts(frozen)
    merger = sum(p.numel() for p in frozen.merger.parameters())
    assert counts == {"total": merger, "merger": merger}  # the frozen generator trains nothing
    assert parameter_hparams({"total": 5, "net": 5}) == {"trainable_parameters/total": 5, "trainable_parameters/net": 5}


def test_fit_logs_parameter_counts_to_csv_hparams_and_wandb(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # wandb would honour a "disabled" left by another test
    run = tmp_path / "run"
    try:
        build_cli(["fit", "--config", PLUMBING, "--config", TINY, "--wandb", "offline", "--run_dir", str(run),
                   "--trainer.max_steps", "2", "--trainer.val_check_interval", "null",
                   "--trainer.check_val_every_n_epoch", "100", "--trainer.enable_progress_bar", "false"])
    finally:
        # Close the offline run, then shut the wandb-core service down: ``finish`` returns once the
        # exit record is handled, but the service's transaction-log writer may still hold buffered
        # records (seen once in CI: the config update was not yet in the file). A process exit
        # does both.
        wandb.finish()
        wandb.teardown()
    expected = {"trainable_parameters/total": PLUMBING_PARAMETERS, "trainable_parameters/net": PLUMBING_PARAMETERS}
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert {k: hparams[k] for k in expected} == expected
    deadline = time.monotonic() + 30.0  # belt and braces: wait for the file to be flushed
    while True:
        try:
            items = logged_wandb_items(run)
        except ValueError:  # the offline run file is not there yet
            items = {"config": {}, "summary": {}}
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        if all(k in items[w] for w in ("config", "summary") for k in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for where in ("config", "summary"):
        got = {k: int(items[where][k]) for k in expected if k in items[where]}
        assert got == expected, f"W&B {where}: {got} (keys logged: {sorted(items[where])})"
