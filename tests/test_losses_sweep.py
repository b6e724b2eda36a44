"""sweeps/losses.yaml: one grid over every trained method's loss terms, weights and loss domains.

The method axis and its loss settings are one W&B parameter, ``config`` (LightningCLI's
``--config``), whose values are whole variants ``{config: experiments/X.yaml, model: ...}``. These
tests check, through hdrlab's real CLI parser, that each variant as ``wandb agent`` renders it
(``--config=<str(mapping)>``) parses to exactly the same configuration as
``fit --config experiments/X.yaml --model.init_args.<k>=<v>`` (nothing leaks between experiments,
the shared ``--width`` / ``--pretrained_trunks`` still reach the interpolated init args), also when
the W&B server hands the mapping back with sorted keys, and that the axes cover every trained method's
loss terms, weights and loss domains.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hdrlab.losses import DOMAINS
from hdrlab.losses.cevr import CEVR_LOSS_WEIGHTS
from hdrlab.losses.cfnet import STRUCTURAL_LOSSES
from hdrlab.sweep.config import command_arg_formats, expand_command, grid_points, load_sweep
from tests.test_sweep_files import cli_parser, parse_fit  # noqa: F401 - cli_parser is a fixture

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "losses.yaml"


@pytest.fixture(scope="module")
def spec() -> Any:
    return load_sweep(SWEEP)


@pytest.fixture(scope="module")
def variants(spec: Any) -> list[dict[str, Any]]:
    return list(spec.raw["parameters"]["config"]["values"])


def _fit_dict(cfg: Any) -> dict[str, Any]:
    out = cfg.fit.as_dict()
    for key in ("config", "experiment"):
        out.pop(key, None)
    return out


def _sorted(value: Any) -> Any:
    return {k: _sorted(value[k]) for k in sorted(value)} if isinstance(value, dict) else value


PREFIX = "model.init_args."
#: shared top-level knobs appended to every parse: the interpolated init args must follow them
SHARED = ["--seed_everything=0", "--width=0.5", "--pretrained_trunks=false"]


def _overrides(variant: dict[str, Any]) -> dict[str, Any]:
    """``{init arg: value}`` of a variant (its keys other than ``config``)."""
    return {k[len(PREFIX):]: v for k, v in variant.items() if k != "config"}


def _class_name(variant: dict[str, Any]) -> str:
    return yaml.safe_load((REPO / variant["config"]).read_text())["model"]["class_path"].rsplit(".", 1)[1]


def _direct_argv(variant: dict[str, Any]) -> list[str]:
    """``fit --config experiments/X.yaml --model.init_args.k=v ...``: the variant written by hand."""
    argv = ["fit", "--config", variant["config"]]
    argv += [f"--{PREFIX}{key}={value}" for key, value in _overrides(variant).items()]
    return argv


def test_grid_is_variants_times_seeds_and_command_carries_the_config(spec, variants):
    points = grid_points(spec)
    assert len(variants) == 58 and len(points) == 58 * 2
    assert {p["seed_everything"] for p in points} == {0, 1}
    assert [str(c) for c in spec.command] == ["${env}", "${interpreter}", "-m", "hdrlab", "fit", "--config",
                                             "experiments/overrides/sweep_losses.yaml", "${args}"]
    for variant in variants:
        # the experiment first, then only init args of the experiment's own class (never a class swap)
        assert list(variant)[0] == "config" and (REPO / variant["config"]).is_file()
        assert len(variant) >= 2 and all(k.startswith(PREFIX) for k in list(variant)[1:])
    # what wandb agent runs: --config=<str(mapping)> (Python str: a YAML flow mapping)
    argv = expand_command(spec.command, points[0], interpreter="python", environ={})
    assert argv[5:7] == ["--config", "experiments/overrides/sweep_losses.yaml"]
    assert argv[7] == f"--config={variants[0]}" and argv[7:] == command_arg_formats(points[0])["args"]


def test_every_variant_parses_to_its_experiment_plus_the_loss_overrides(spec, variants, cli_parser):  # noqa: F811
    start = time.perf_counter()
    points = [p for p in grid_points(spec) if p["seed_everything"] == 0]
    assert [p["config"] for p in points] == variants
    for point in points:
        variant = point["config"]
        rendered = expand_command(spec.command, point, interpreter="python", environ={})[4:]
        assert got_is_losses(parse_fit(cli_parser, rendered))
        got = parse_fit(cli_parser, rendered + SHARED[1:])
        want = parse_fit(cli_parser, _direct_argv(variant) + SHARED)
        assert _fit_dict(got) == _fit_dict(want), variant
        assert got.fit.model.init_args.get("width", 0.5) == 0.5  # TwoStage has no width of its own
        # the W&B server may hand dict values back with sorted keys: same configuration
        resorted = parse_fit(cli_parser, ["fit", f"--config={_sorted(variant)}", *SHARED])
        assert _fit_dict(resorted) == _fit_dict(want), variant
        for key, value in _overrides(variant).items():
            parsed = got.fit.model.init_args[key]
            if isinstance(value, dict):
                assert {k: parsed[k] for k in value} == value
            else:
                assert parsed == value
    print(f"parsed {len(points)} variants x 4 in {time.perf_counter() - start:.1f} s")


def got_is_losses(cfg: Any) -> bool:
    """The sweep's own parameters arrive: run folder ``runs/losses/...`` and the seed."""
    return cfg.fit.experiment == "losses" and cfg.fit.seed_everything == 0


def test_axes_cover_every_method_and_loss_domain(variants):
    by_class: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        by_class.setdefault(_class_name(variant), []).append(_overrides(variant))
    assert set(by_class) == {"SingleHDRMethod", "Le2023Method", "CFNetMethod", "TwoStage",
                             "DeepRecursiveMethod", "CEVRMethod", "Kim2021Method",
                             "Kalantari2017", "Wu2018", "AHDRNet", "ExpandNetMethod", "HDRCNNMethod",
                             "DuHDRMethod"}
    single = by_class["SingleHDRMethod"]
    assert all(v["stage"] == "hallucination" for v in single)  # the stage whose loss has P and TV
    weights = {(v["perceptual_weight"], v["tv_weight"]) for v in single if "perceptual_weight" in v}
    assert weights == {(p, t) for p in (0.0, 0.001, 0.01) for t in (0.0, 0.1, 1.0)}
    assert {v.get("loss_domain", "mu_law") for v in single} == set(DOMAINS)
    le_keys = {k for v in by_class["Le2023Method"] for k in v["loss_weights"]}
    assert le_keys == {"recon", "hdr", "tv", "perceptual"}
    assert {v["structural_loss"] for v in by_class["CFNetMethod"]} == set(STRUCTURAL_LOSSES)
    assert {v["loss_domain"] for v in by_class["TwoStage"]} == set(DOMAINS)
    # Deep Recursive HDRI: the LSGAN weight {off, official 0.01, x10}
    assert [v for v in by_class["DeepRecursiveMethod"]] == [{"gan_weight": w} for w in (0.0, 0.01, 0.1)]
    # CEVR: the cycle weight {off, official 0.1}; the direct L1 keeps weight 1
    assert by_class["CEVRMethod"] == [{"loss_weights": {"cycle": 0.0}}, {"loss_weights": {"cycle": 0.1}}]
    assert set(CEVR_LOSS_WEIGHTS) == {"l1", "cycle"} and CEVR_LOSS_WEIGHTS["cycle"] == 0.1
    # Kim 2021: the CoBi term on / off, the only loss option Kim2021Method has
    assert by_class["Kim2021Method"] == [{"cobi": False}, {"cobi": True}]
    # the learned three-exposure mergers: the domain of their one loss term
    for name in ("Kalantari2017", "Wu2018", "AHDRNet"):
        assert [v["loss_domain"] for v in by_class[name]] == ["mu_law", "linear", "log", "pu21"]
    # ExpandNet: the cosine weight (0 = L1 only, official 5); HDRCNN: direct vs I/R and its lambda
    assert by_class["ExpandNetMethod"] == [{"loss_lambda": w} for w in (0.0, 1.0, 5.0, 10.0)]
    assert by_class["HDRCNNMethod"] == [{"loss": "direct"}] + [{"loss": "ir", "loss_lambda": w} for w in (0.2, 0.5, 0.8)]
    # DuHDR's ITnet stage: the dual clipping term off / official, and every HDR loss domain
    duhdr = by_class["DuHDRMethod"]
    assert all(v["stage"] == "hallucination" for v in duhdr)
    assert {v["itn_dual_weight"] for v in duhdr if "itn_dual_weight" in v} == {0.0, 10.0}
    assert {v.get("loss_domain", "mu_law") for v in duhdr} == set(DOMAINS)


def _init_options(cls: type) -> set[str]:
    return {name for name, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY}


def test_generator_methods_without_more_loss_options():
    """The loss options of the generator methods are exactly the ones the grid sweeps: DrTMO has none
    (a single masked L1; ``threshold`` is the inference truncation), Kim 2021 only the CoBi switch,
    neither of the four a loss-domain option."""
    from hdrlab.methods.cevr import CEVRMethod
    from hdrlab.methods.deep_recursive import DeepRecursiveMethod
    from hdrlab.methods.drtmo import DrTMOMethod
    from hdrlab.methods.kim2021 import Kim2021Method

    loss_like = lambda names: {n for n in names if "loss" in n or "weight" in n or n in {"cobi", "domain"}}  # noqa: E731
    assert loss_like(_init_options(DrTMOMethod)) == set()
    assert loss_like(_init_options(DeepRecursiveMethod)) == {"gan_weight", "weight_decay"}
    assert loss_like(_init_options(CEVRMethod)) == {"loss_weights"}
    assert loss_like(_init_options(Kim2021Method)) == {"cobi", "weight_decay"}
    assert not any(_init_options(c) & {"loss_domain", "clip_threshold"}
                   for c in (DrTMOMethod, DeepRecursiveMethod, CEVRMethod, Kim2021Method))


def test_one_variant_per_method_builds_with_its_loss_setting(spec, variants, cli_parser):  # noqa: F811
    """The constructors accept the overrides (tiny width, random trunks; built, not trained)."""
    from jsonargparse import ArgumentParser

    from hdrlab.methods import HDRMethod

    model_parser = ArgumentParser(exit_on_error=False)
    model_parser.add_subclass_arguments(HDRMethod, "model")
    picks = {
        "SingleHDRMethod": lambda m: (m.stage, m.loss_domain) == ("hallucination", "pu21"),
        "Le2023Method": lambda m: m.loss.weights["hdr"] == 10.0 and m.loss.weights["recon"] == 100.0,
        "CFNetMethod": lambda m: m.structural_loss == "mef_ssim",
        "TwoStage": lambda m: m.loss_domain == "pu21",
        "DeepRecursiveMethod": lambda m: m.loss.gan_weight == 0.1,
        "CEVRMethod": lambda m: m.loss.weights == {"l1": 1.0, "cycle": 0.0},
        "Kim2021Method": lambda m: m.cobi is None,
        "Kalantari2017": lambda m: m.merger.loss_domain == "log",
        "Wu2018": lambda m: m.merger.loss_domain == "pu21",
        "AHDRNet": lambda m: m.merger.loss_domain == "linear",
        "ExpandNetMethod": lambda m: m.loss_lambda == 0.0,
        "HDRCNNMethod": lambda m: (m.loss_kind, m.loss_lambda) == ("ir", 0.2),
        "DuHDRMethod": lambda m: (m.stage, m.loss_domain) == ("hallucination", "pu21"),
    }
    chosen = {
        "SingleHDRMethod": {"stage": "hallucination", "loss_domain": "pu21"},
        "Le2023Method": {"loss_weights": {"hdr": 10.0}},
        "CFNetMethod": {"structural_loss": "mef_ssim"},
        "TwoStage": {"loss_domain": "pu21"},
        "DeepRecursiveMethod": {"gan_weight": 0.1},
        "CEVRMethod": {"loss_weights": {"cycle": 0.0}},
        "Kim2021Method": {"cobi": False},  # no VGG19 trunk to build
        "Kalantari2017": {"loss_domain": "log"},
        "Wu2018": {"loss_domain": "pu21"},
        "AHDRNet": {"loss_domain": "linear"},
        "ExpandNetMethod": {"loss_lambda": 0.0},
        "HDRCNNMethod": {"loss": "ir", "loss_lambda": 0.2},
        "DuHDRMethod": {"stage": "hallucination", "loss_domain": "pu21"},
    }
    for variant in variants:
        name = _class_name(variant)
        if _overrides(variant) != chosen[name]:
            continue
        cfg = parse_fit(cli_parser, ["fit", f"--config={variant}", "--width=0.125", "--pretrained_trunks=false"])
        model_cfg = cfg.fit.model.as_dict()
        for part in ("generator", "merger"):
            sub = model_cfg["init_args"].get(part)
            if isinstance(sub, dict) and "width" in sub.get("init_args", {}):
                sub["init_args"]["width"] = 0.125
        if name == "Le2023Method":
            model_cfg["init_args"]["perceptual"] = False  # skip the VGG19 trunk: not what is tested
        model = model_parser.instantiate_classes(model_parser.parse_object({"model": model_cfg})).model
        assert type(model).__name__ == name and picks.pop(name)(model), name
    assert not picks, f"no variant built for {sorted(picks)}"


# ----------------------------------------------------------------------------- SingleHDR loss domain
def test_singlehdr_loss_domain_option_closed_forms():
    """``loss_domain`` replaces the official T in stage 3 (L1, TV) and the joint L1; default = official."""
    import math

    import torch

    from hdrlab.errors import ConfigError
    from hdrlab.losses import pu21_domain
    from hdrlab.methods import SingleHDRMethod
    from hdrlab.losses.singlehdr import hallucination_loss, joint_loss, normalize_mean, symmetric_total_variation

    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 16, 16, generator=g) * 4, torch.rand(2, 3, 16, 16, generator=g) * 4
    official = lambda v: torch.log1p(10.0 * v) / math.log(11.0)  # noqa: E731 - T(v) = log(1 + 10 v) / log(11)
    log = lambda v: torch.log(v + 1.0 / 255.0)  # noqa: E731
    assert torch.allclose(joint_loss(pred, target),
                          (official(normalize_mean(pred)) - official(normalize_mean(target))).abs().mean())
    assert torch.allclose(joint_loss(pred, target, domain="pu21"),
                          (pu21_domain(normalize_mean(pred)) - pu21_domain(normalize_mean(target))).abs().mean())
    terms = hallucination_loss(pred, target, domain="log")
    assert torch.allclose(terms["l1"], (log(pred) - log(target)).abs().mean())
    assert torch.allclose(terms["tv"], 0.1 * symmetric_total_variation(log(pred)).mean())
    linear = hallucination_loss(pred, target, domain="linear")
    assert torch.allclose(linear["l1"], (pred - target).abs().mean())

    tiny = dict(width=0.125, pretrained_trunks=False)
    assert SingleHDRMethod(**tiny).loss_domain == "mu_law"
    with pytest.raises(ConfigError, match="loss_domain='mulaw' is unknown"):
        SingleHDRMethod(loss_domain="mulaw", **tiny)
    method = SingleHDRMethod(stage="joint", loss_domain="log", **tiny).eval()
    batch = {"ldr": torch.rand(1, 3, 32, 32, generator=g), "hdr": torch.rand(1, 3, 32, 32, generator=g) * 3}
    loss, _ = method.compute_loss(batch)
    with torch.no_grad():
        expected = joint_loss(method.net(batch["ldr"])["hdr"], batch["hdr"], domain="log")
    assert torch.allclose(loss.detach(), expected)
