"""The held-out comparison, run as recipes and compared by ``hdrlab compare --test``, reproduces the
per-scene table of the script protocol it replaced.

Fixture ``tests/fixtures/heldout_script_60/``: the output of ``benchmarks/heldout_procedural.py``
(commit 3c5f072, its last version) run as

    python benchmarks/heldout_procedural.py --out OUT --samples 60 --seeds 0 \\
        --methods singlehdr le2023_debevec le2023_weak_debevec --jobs 1

(``per_scene.csv``: one row per method x state x held-out scene; ``report.md``: its tables). Here
the Le2023 + Debevec held-out recipe (trained, untrained self, ``saturation_bound`` ablation; its
recipe is the same in every protocol version) and the no-hallucination baseline run in this process
on the first 4 of the 20 pinned test scenes (``num_test_scenes 4``: the scenes are
keyed by index, so they are the same scenes), and every metric of every scene must equal the
recorded value within float tolerance (the script ran one thread per process; kernels summed in
another order differ in the last bits). The per-scene win counts against the untrained self and the
baseline are recounted from the fixture.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from hdrlab.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "heldout_script_60" / "per_scene.csv"
SCENES = 4
#: script (method, state) -> recipe test stage label
LABELS = {
    ("le2023_debevec", "trained"): "le2023_debevec/trained",
    ("le2023_debevec", "untrained"): "le2023_debevec/untrained",
    ("le2023_debevec_saturation_bound", "trained"): "le2023_debevec/saturation_bound",
    ("baseline_inverse_crf", "baseline"): "baseline_inverse_crf/baseline",
}
OVERRIDES = ["--max_samples", "60", "--data.init_args.num_test_scenes", str(SCENES), "--wandb", "disabled",
             "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

pytestmark = pytest.mark.usefixtures("single_thread")


def _fixture() -> dict[str, dict[str, dict[str, float]]]:
    """label -> scene -> metric -> value, for the first :data:`SCENES` scenes."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    with FIXTURE.open(newline="") as f:
        for row in csv.DictReader(f):
            label = LABELS.get((row["method"], row["state"]))
            if label is None or int(row["scene"].rsplit("_", 1)[1]) >= 20_000_000 + SCENES:
                continue
            out.setdefault(label, {})[row["scene"]] = {
                k: float(v) if v else math.nan for k, v in row.items()
                if k not in ("method", "state", "seed", "scene", "clipped_fraction")}
    return out


def test_recipes_and_compare_reproduce_the_script_per_scene_table(tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    for recipe in ("le2023_debevec", "baseline_inverse_crf"):
        assert main(["recipe", f"experiments/recipes/heldout/{recipe}.yaml", "--seed", "0",
                     "--run_dir", str(trials / recipe), "--", *OVERRIDES]) == 0
    out = tmp_path / "report"
    assert main(["compare", str(trials), "--test", "-o", str(out), "--no_pdf", "--reference",
                 "untrained_self=@untrained", "--reference", "no_hallucination=baseline_inverse_crf"]) == 0

    expected = _fixture()
    assert set(expected) == set(LABELS.values()) and all(len(v) == SCENES for v in expected.values())
    with (out / "per_scene.csv").open(newline="") as f:
        got = list(csv.DictReader(f))
    checked = 0
    for row in got:
        for label, scenes in expected.items():
            want = scenes[row["scene"]].get(row["metric"], math.nan)
            value = float(row[label]) if row[label] else math.nan
            if math.isnan(want):
                assert math.isnan(value), (label, row["scene"], row["metric"])
                continue
            assert value == pytest.approx(want, rel=1e-4, abs=1e-3), (label, row["scene"], row["metric"], value, want)
            checked += 1
    assert checked >= 4 * SCENES * 10

    # win counts recounted from the recorded table (clipped PU21-PSNR, higher is better)
    def wins(run: str, ref: str, metric: str = "pu21_psnr_clipped") -> int:
        return sum(expected[run][s][metric] > expected[ref][s][metric] for s in expected[run])

    text = (out / "per_scene.md").read_text().split("## Per-scene values")[0]
    section = text.split("`pu21_psnr_clipped`")[1].split("## ")[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("| le2023_debevec/trained |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1].startswith(f"{wins('le2023_debevec/trained', 'le2023_debevec/untrained')} / {SCENES} ")
    assert cells[3].startswith(f"{wins('le2023_debevec/trained', 'baseline_inverse_crf/baseline')} / {SCENES} ")
    # the trained model and the baseline saved their outputs: the report draws the scene figures
    assert list(out.glob("scene_procedural_*.png")) and "Per-scene figures" in (out / "index.html").read_text()
