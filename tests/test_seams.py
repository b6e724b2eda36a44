"""The method contract holds: a generator and a merger defined outside the package
(:mod:`tests.support.toy_stages`: a stride-8 generator and a merger of exactly 2 exposures with its
own objective) work, with no edit under ``hdrlab/``, in

* ``TwoStage`` training (its own objective is picked, the extreme pair selected; the loss falls),
* ``hdrlab info`` (parameters, the declared stride),
* the memory planner (``hdrlab budget``: patches are multiples of the declared stride),
* ``hdrlab fit`` and ``hdrlab reconstruct --merger own`` on a real HDR photo made into an LDR
  (padded to the declared stride, cropped back).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hdrlab.budget.methods import method_estimator
from hdrlab.budget.units import parse_size
from hdrlab.camera import CRF
from hdrlab.cli import build_cli, main
from hdrlab.data import ProceduralDataModule
from hdrlab.data.datamodules import collate_hdr_batch
from hdrlab.io import read_hdr, write_png
from hdrlab.methods import TwoStage
from tests.support.toy_stages import ToyGenerator, ToyMerger

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "experiments" / "overrides" / "tiny.yaml"
REAL_HDR = "polyhaven_drei/empty_warehouse_01_1k.hdr"

pytestmark = pytest.mark.usefixtures("single_thread")


def toy_experiment(folder: Path) -> Path:
    """An experiment YAML for TwoStage(ToyGenerator, ToyMerger), written as a user would."""
    config = {
        "model": {
            "class_path": "hdrlab.methods.TwoStage",
            "init_args": {
                "mode": "joint",
                "lr": 3e-3,
                "generator": {"class_path": "tests.support.toy_stages.ToyGenerator", "init_args": {"ev": [-2.0, 2.0]}},
                "merger": {"class_path": "tests.support.toy_stages.ToyMerger"},
            },
        },
        "data": {"class_path": "hdrlab.data.ProceduralDataModule", "init_args": {"patch_size": 64, "batch_size": 2}},
        "trainer": {"accelerator": "cpu", "max_steps": 4, "log_every_n_steps": 1},
    }
    path = folder / "toy_two_stage.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_stage_trains_the_toy_stages_with_the_mergers_own_objective():
    method = TwoStage(generator=ToyGenerator(), merger=ToyMerger(), mode="joint", lr=3e-3)
    assert method.merger_loss == "own" and method.select == "extremes" and method.generation_ev == (-2.0, 2.0)
    assert method.stride == 8 and method.output_domain == "linear"
    data = ProceduralDataModule(patch_size=64, batch_size=2, num_train_scenes=4, num_val_scenes=1, seed=0)
    data.setup("fit")
    batch = collate_hdr_batch([data.train_set[(i, 0)] for i in range(2)])
    optimizer = method.configure_optimizers()
    losses = []
    for _ in range(60):
        loss, terms = method.compute_loss(batch)
        assert set(terms) == {"toy_log_l1"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    print(f"toy TwoStage loss {losses[0]:.4f} -> {losses[-1]:.4f}")  # measured 0.588 -> 0.399
    assert losses[-1] < 0.8 * losses[0]
    assert method.generator.up.weight.abs().sum() > 0  # the generator trained through the merger


def test_info_and_the_planner_read_the_declarations(tmp_path, capsys):
    config = toy_experiment(tmp_path)
    assert main(["info", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    generator, merger = ToyGenerator(), ToyMerger()
    expected = sum(p.numel() for p in [*generator.parameters(), *merger.parameters()])
    assert info["stride"] == 8 and info["parameters"]["total"] == expected and info["output_domain"] == "linear"

    estimator = method_estimator([config])
    assert estimator.stride == 8 and estimator.trainable
    plan = estimator.plan(parse_size("1GiB"), min_patch=20)
    assert plan.patch % 8 == 0
    assert main(["budget", "--config", str(config), "--memory_budget", "1GiB", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["experiment"] == "toy_two_stage" and report["paper"]["stride"] == 8 and report["fits"]
    assert report["plan"]["patch"] % 8 == 0


def test_fit_and_reconstruct_a_real_photo_with_the_toy_stages(tmp_path, real_hdr_dir, capsys):
    config = toy_experiment(tmp_path)
    run_dir = tmp_path / "run"
    build_cli(["fit", "--config", str(config), "--config", str(TINY), "--wandb", "disabled",
               "--checkpoint_every_n_steps", "4", "--trainer.limit_val_batches", "0", "--run_dir", str(run_dir)])
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run_dir / "config.yaml").is_file()

    hdr = read_hdr(real_hdr_dir / REAL_HDR)[:, :101, :157]  # sides that are not multiples of 8
    ldr = (CRF.gamma(2.2)(hdr.clamp(0, 1)) * 255).round().to(torch.uint8)
    photo = tmp_path / "photo.png"
    write_png(photo, ldr.permute(1, 2, 0).numpy())
    out = tmp_path / "out"
    assert main(["reconstruct", str(photo), "-o", str(out), "--ckpt", str(ckpt), "--merger", "own"]) == 0
    radiance = read_hdr(out / "photo.exr")
    assert tuple(radiance.shape) == (3, 101, 157)
    assert torch.isfinite(radiance).all() and float(radiance.min()) >= 0.0 and float(radiance.max()) > 0.0
    assert "TwoStage (generator), merger=own" in capsys.readouterr().out


# --------------------------------------------------------------------------- import direction
PACKAGE = REPO / "hdrlab"
#: modules of one paper (network, objective, method); they may not import another paper's modules
PAPERS = {
    "singlehdr": ("models/direct/singlehdr.py", "losses/singlehdr.py", "methods/singlehdr.py"),
    "le2023": ("models/generators/le2023_multiexposure.py", "losses/le2023.py", "methods/le2023_multiexposure.py"),
    "cfnet": ("models/mergers/cfnet.py", "losses/cfnet.py", "methods/cfnet.py"),
    "drtmo": ("models/generators/drtmo.py", "losses/drtmo.py", "methods/drtmo.py"),
    "deep_recursive": ("models/generators/deep_recursive.py", "losses/deep_recursive.py", "methods/deep_recursive.py"),
    "cevr": ("models/generators/cevr.py", "losses/cevr.py", "methods/cevr.py"),
    "kim2021": ("models/generators/kim2021.py", "losses/kim2021.py", "methods/kim2021.py",
                "models/mergers/kim_synthesis.py"),
    "kalantari2017": ("models/mergers/kalantari.py", "losses/kalantari.py", "methods/kalantari.py"),
    "wu2018": ("models/mergers/wu.py", "losses/wu.py", "methods/wu.py"),
    "ahdrnet": ("models/mergers/ahdrnet.py", "losses/ahdrnet.py", "methods/ahdrnet.py"),
    "expandnet": ("models/direct/expandnet.py", "losses/expandnet.py", "methods/expandnet.py"),
    "hdrcnn": ("models/direct/hdrcnn.py", "losses/hdrcnn.py", "methods/hdrcnn.py"),
    "duhdr": ("models/direct/duhdr.py", "losses/duhdr.py", "methods/duhdr.py"),
}
#: (paper, paper it is defined on): DuHDR's networks are SingleHDR's (She et al., Sec. 3)
BUILDS_ON = {("duhdr", "singlehdr")}
#: consumers that must read declarations, never name a paper's module
GENERIC = ("methods/base.py", "methods/two_stage.py", "methods/build.py", "budget", "commands/info.py",
           "commands/reconstruct.py", "commands/budget.py", "cli.py")


def _imports(path: Path) -> set[str]:
    """Every ``hdrlab.*`` module a file imports (top level or inside functions), as a path under hdrlab/."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            if name.startswith("hdrlab."):
                found.add(name.removeprefix("hdrlab.").replace(".", "/"))
    return found


def _files(entry: str) -> list[Path]:
    target = PACKAGE / entry
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def test_imports_flow_one_way_and_papers_stay_apart():
    lower_than = {"losses": ("models", "methods", "budget", "sweep", "commands", "cli"),
                  "models": ("methods", "budget", "sweep", "commands", "cli", "lightning")}
    for layer, forbidden in lower_than.items():
        for path in _files(layer):
            bad = [m for m in _imports(path) if m.split("/")[0] in forbidden]
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"
            assert "import lightning" not in path.read_text() or layer != "models", path
    paper_of = {f: paper for paper, files in PAPERS.items() for f in files}
    for paper, files in PAPERS.items():
        for file in files:
            for module in _imports(PACKAGE / file):
                other = paper_of.get(module + ".py")
                assert other in (None, paper) or (paper, other) in BUILDS_ON, f"{file} ({paper}) imports {module} ({other})"
    for entry in GENERIC:
        for path in _files(entry):
            named = [m for m in _imports(path) if m + ".py" in paper_of]
            assert not named, f"{path.relative_to(REPO)} names a paper's module: {named}"


def test_declarations_are_found_for_short_class_paths_and_legacy_configs_load():
    """``class_path: TwoStage`` (a short name jsonargparse accepts) still has its file options
    cleared; a composite config written before ``structural_loss`` moved to the merger still builds."""
    from hdrlab.methods.build import build_method, without_files

    short = {"class_path": "TwoStage", "init_args": {"generator_ckpt": "/nonexistent.ckpt",
                                                     "generator": {"class_path": "tests.support.toy_stages.ToyGenerator"},
                                                     "merger": {"class_path": "tests.support.toy_stages.ToyMerger"}}}
    assert without_files(short)["init_args"]["generator_ckpt"] is None
    assert build_method(short, files=False).stride == 8
    legacy = {"class_path": "hdrlab.methods.TwoStage", "init_args": {
        "structural_loss": "ssim", "mode": "freeze_generator",
        "generator": {"class_path": "hdrlab.models.generators.Le2023Generator", "init_args": {"width": 0.125, "levels": 4}},
        "merger": {"class_path": "hdrlab.models.mergers.CFNetMerger", "init_args": {"width": 0.125}}}}
    assert build_method(legacy).merger_loss == "own"
    legacy["init_args"]["structural_loss"] = "mef_ssim"
    with pytest.raises(Exception, match="merger.init_args.structural_loss"):
        build_method(legacy)
