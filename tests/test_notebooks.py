"""The analysis notebooks, executed on sweep folders written in the test.

Jupyter (``nbformat``, ``nbclient``, ``ipykernel``) is not a dependency of hdrlab, so the notebooks
are executed WITHOUT a kernel: the ``.ipynb`` JSON is parsed with :mod:`json` and the source of
every code cell is ``exec``-uted in order in one shared namespace. That runs the notebook's code
exactly, cell by cell, as a kernel would (no magics are used, and ``IPython.display`` falls back to
``print`` when IPython is absent). Parameters reach the notebooks through the environment variables
their parameter cell reads (``HDRLAB_SWEEP_DIR``, ``HDRLAB_TABLE_CSV``, ``HDRLAB_FIGURE_DIR``).

The run folders are the format-exact fakes of ``tests/test_compare.py`` (LightningCLI
``config.yaml``, CSV-logger ``metrics.csv``, ``summary.json``, previews). The reference for the
table is ``hdrlab compare``'s ``table.csv`` through the real CLI: the notebook's CSV must equal it
byte for byte; group means are also checked against :mod:`statistics`.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

import cv2
import pytest
from test_compare import _grid, lightning_config, write_run

from hdrlab.cli import main as cli_main

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("compare_stage_combinations.ipynb", "ablation_analysis.ipynb")


def load_notebook(path: Path) -> dict[str, Any]:
    """Parse an ``.ipynb`` file (plain JSON)."""
    return json.loads(path.read_text())


def execute_notebook(path: Path) -> dict[str, Any]:
    """Run every code cell of a notebook in order in one namespace; returns that namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for i, cell in enumerate(load_notebook(path)["cells"]):
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_stripped_nbformat4(name: str) -> None:
    book = load_notebook(NOTEBOOKS / name)
    assert book["nbformat"] == 4 and book["nbformat_minor"] == 5
    assert book["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in book["cells"]]
    assert len(set(ids)) == len(ids) and all(isinstance(i, str) and 1 <= len(i) <= 64 for i in ids)
    kinds = [c["cell_type"] for c in book["cells"]]
    assert kinds[0] == "markdown" and kinds.count("code") >= 5
    for cell in book["cells"]:
        assert isinstance(cell["metadata"], dict) and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # outputs stripped
            compile("".join(cell["source"]), name, "exec")
    assert "parameters" in book["cells"][1]["metadata"]["tags"]


def _compare_csv(sweep: Path, out: Path) -> Path:
    assert cli_main(["compare", str(sweep), "--metric", "val/pu21_psnr", "-o", str(out)]) == 0
    return out / "table.csv"


def _run(name: str, sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Path]:
    table = tmp_path / f"{name}.csv"
    monkeypatch.setenv("HDRLAB_SWEEP_DIR", str(sweep))
    monkeypatch.setenv("HDRLAB_TABLE_CSV", str(table))
    monkeypatch.setenv("HDRLAB_FIGURE_DIR", str(tmp_path / f"{name}_figures"))
    monkeypatch.delenv("HDRLAB_WANDB_SWEEP", raising=False)
    return execute_notebook(NOTEBOOKS / name), table


def test_ablation_notebook_table_equals_compare_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sweep, expected = _grid(tmp_path)  # 2 scenes x 2 loss domains x 3 seeds, one crash, one NaN run
    ns, table = _run("ablation_analysis.ipynb", sweep, tmp_path, monkeypatch)
    reference = _compare_csv(sweep, tmp_path / "report")
    assert table.read_bytes() == reference.read_bytes()
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        values = expected[(int(row["data.init_args.num_train_scenes"]), row["model.init_args.loss_domain"])]
        assert abs(float(row["val/pu21_psnr_mean"]) - statistics.mean(values)) < 1e-12
    # main effect of the dataset size: the mean over both loss domains of the finished runs
    effects = ns["main_effects"]["data.init_args.num_train_scenes"]
    for scenes in (15, 60):
        pooled = expected[(scenes, "log")] + expected[(scenes, "pu21")]
        mean, std = effects[("val/pu21_psnr", scenes)]
        assert mean == pytest.approx(statistics.mean(pooled), abs=1e-12)
        assert std == pytest.approx(statistics.stdev(pooled), abs=1e-12)
    figures = tmp_path / "ablation_analysis.ipynb_figures"
    for png in ("metric_vs_data.init_args.num_train_scenes.png", "validation_curves.png"):
        img = cv2.imread(str(figures / png))
        assert img is not None and img.shape[0] > 100, png
    printed = capsys.readouterr().out
    assert "Failed runs (2):" in printed and "W&B API not used" in printed


def test_stage_notebook_table_equals_compare_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """2 generators x (a linear and a display merger) x 2 seeds, plus one crashed run."""
    sweep = tmp_path / "sweep"
    generators = {"Le2023Generator": {"width": 0.125, "ev": [-2.0, 2.0]}, "SingleHDRGenerator": {"width": 0.125}}
    mergers = {"hdrlab.models.mergers.DebevecMerger": ["val/psnr_mu", "val/pu21_psnr"],
               "hdrlab.models.mergers.MertensMerger": ["val/display_psnr", "val/display_ssim"]}
    expected: dict[tuple[str, str], list[float]] = {}
    i = 0
    for g, (gen, gen_args) in enumerate(generators.items()):
        for m, (merger, cols) in enumerate(mergers.items()):
            for seed in range(2):
                run = sweep / "trials" / f"t{i:04d}"
                generator = {"class_path": f"hdrlab.models.generators.{gen}", "init_args": gen_args}
                cfg = lightning_config(seed=seed, run_dir=run, merger=merger, model_args={"generator": generator})
                value = 20.0 + 3 * g + m + 0.25 * seed + 0.125 * i
                status = "failed: RuntimeError: out of memory" if i == 5 else "finished"
                write_run(run, config=cfg, final={c: value for c in cols}, columns=cols, status=status,
                          scenes=("procedural_10000000",))
                if status == "finished":
                    expected.setdefault((gen, merger.rsplit(".", 1)[1]), []).append(value)
                i += 1
    ns, table = _run("compare_stage_combinations.ipynb", sweep, tmp_path, monkeypatch)
    reference = _compare_csv(sweep, tmp_path / "report")
    assert table.read_bytes() == reference.read_bytes()
    comp = ns["comparison"]
    assert comp.params == ["model.init_args.generator.class_path", "model.init_args.merger.class_path"]
    for row in comp.rows:
        key = (row["model.init_args.generator.class_path"].rsplit(".", 1)[1],
               row["model.init_args.merger.class_path"].rsplit(".", 1)[1])
        score = "val/pu21_psnr" if key[1] == "DebevecMerger" else "val/display_psnr"
        assert row["n"] == len(expected[key])
        assert row[f"{score}_mean"] == pytest.approx(statistics.mean(expected[key]), abs=1e-12)
    heatmap = cv2.imread(str(tmp_path / "compare_stage_combinations.ipynb_figures" / "stage_heatmap.png"))
    assert heatmap is not None and heatmap.shape[1] > 1.5 * heatmap.shape[0]  # linear | display panels
    printed = capsys.readouterr().out
    assert "| t0000 | Le2023Generator | DebevecMerger | finished | val/pu21_psnr = 20.000 |" in printed
    assert "Failed runs (1):" in printed and "t0005" in printed
