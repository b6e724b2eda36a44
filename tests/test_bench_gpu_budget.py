"""The GPU memory-budget check's logic (benchmarks/gpu_budget_check.py): its commands, how it reads a run
folder, and its table. The check itself needs a CUDA device; nothing here does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_budget_check as G  # noqa: E402


def _run_folder(root: Path, *, allocated: float | None, status: str = "finished") -> Path:
    root.mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps({"status": status}))
    header = ["budget/batch", "budget/accumulate", "budget/patch", "budget/precision_bits", "budget/checkpointing",
              "budget/estimated_bytes", "memory/estimated_bytes", "memory/max_allocated_bytes",
              "memory/max_reserved_bytes", "step", "train/throughput"]
    rows = [["2", "4", "256", "16", "1", str(3 * 2**30), "", "", "", "0", ""]]
    rows += [["", "", "", "", "", "", "", "", "", str(i), str(t)] for i, t in enumerate([1.0, 2.0, 10.0, 12.0, 11.0])]
    if allocated is not None:
        rows.append(["", "", "", "", "", "", str(3 * 2**30), str(allocated), str(allocated * 1.2), "5", ""])
    (root / "metrics.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return root


def test_read_run_puts_the_peaks_beside_the_estimate(tmp_path: Path) -> None:
    row = G.read_run(_run_folder(tmp_path / "a", allocated=3.15 * 2**30), warmup=2)
    assert row["status"] == "finished" and row["batch"] == 2 and row["accumulate"] == 4 and row["patch"] == 256
    assert abs(row["allocated_over_estimate"] - 1.05) < 1e-9
    assert row["samples_per_s"] == 11.0  # median of the logged throughput after 2 warm-up values
    assert G._met(row) is True
    far = G.read_run(_run_folder(tmp_path / "b", allocated=3.6 * 2**30), warmup=2)
    assert G._met(far) is False  # 1.20: outside 10 %
    cpu = G.read_run(_run_folder(tmp_path / "c", allocated=None), warmup=2)
    assert cpu["max_allocated_bytes"] is None and cpu["estimated_bytes"] == 3 * 2**30 and G._met(cpu) is None
    missing = G.read_run(tmp_path / "nothing", warmup=2)
    assert missing["status"] == "missing" and G._met(missing) is False


def test_table_marks_goals_and_failures(tmp_path: Path) -> None:
    rows = {"ok": G.read_run(_run_folder(tmp_path / "ok", allocated=3.0 * 2**30), warmup=2),
            "oom": {"status": "failed", "error": "torch.OutOfMemoryError: CUDA out of memory"}}
    text = G.render_table(rows, budget="4GiB", device="NVIDIA H100")
    ok_line = next(line for line in text.splitlines() if line.startswith("| ok |"))
    assert "| 2 x 4 | 256 | bf16/fp16 | on | 3,072 | 3,072 | 3,686 | 1.00 | 11.0 | yes |" in ok_line
    oom_line = next(line for line in text.splitlines() if line.startswith("| oom |"))
    assert "failed: torch.OutOfMemoryError" in oom_line and oom_line.endswith("| **no** |")


def test_dry_run_lists_every_trainable_experiment(capsys) -> None:
    assert G.main(["--dry_run", "--out", "/tmp/x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    stems = sorted(p.stem for p in (Path(G.ROOT) / "experiments").glob("*.yaml") if not p.stem.startswith("baseline_"))
    assert len(lines) == len(stems) and all("--memory_budget 4GiB" in line and "--pretrained_trunks false" in line
                                            and "--trainer.accelerator gpu" in line for line in lines)
    assert not any("baseline_" in line for line in lines)
