"""``hdrlab info --config experiments/X.yaml [--model.init_args.K V ...] [--json] [--size 512]``: size and cost of a method at full size.

Prints the trainable parameters of each sub-network and in total (frozen loss / metric networks and
buffers excluded) and the FLOPs of one prediction, counted as ``2 x MACs`` by
:class:`torch.utils.flop_counter.FlopCounterMode` under ``FakeTensorMode`` (no real compute) at a
``size x size`` input (the method's :meth:`~hdrlab.methods.base.HDRMethod.predict_image` on its
:meth:`~hdrlab.methods.base.HDRMethod.example_batch`: a display merger like CF-Net produces a
``size x size`` output; a generator method counts the whole generated stack and its merge).

The experiment's shared knobs are forced to full size: ``width = 1`` and ``pretrained_trunks = false``,
and every option the classes declare in ``file_options`` is cleared (pretrained files, checkpoints
and curve files change no count and need not be present). The JSON also reports the method's
declared ``stride`` (the multiple training crops and inputs must have).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from hdrlab.errors import ConfigError


def load_experiment_model(configs: list[str], *, width: float = 1.0, pretrained_trunks: bool = False,
                          overrides: list[str] | None = None) -> Any:
    """Instantiate the ``model`` of experiment config files (later files override earlier ones),
    then of the dotted ``overrides`` (``["model.init_args.scale=4", ...]``, applied last), with the
    declared file options cleared (:func:`hdrlab.methods.build.without_files`)."""
    from hdrlab.methods.build import build_method

    merged = OmegaConf.create({})
    for path in configs:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = OmegaConf.load(path)
        except UnicodeDecodeError as err:
            raise ConfigError(f"--config {path} is not a text (YAML) file: byte {err.start} is not UTF-8; give an "
                              "experiment YAML such as experiments/<x>.yaml") from err
        merged = OmegaConf.merge(merged, loaded)
    if overrides:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    merged.width = width
    merged.pretrained_trunks = pretrained_trunks
    if "model" not in merged:
        raise ConfigError(f"{configs[-1]} has no 'model' section; give an experiment config (experiments/*.yaml)")
    model_cfg = OmegaConf.to_container(merged.model, resolve=True)
    return build_method(model_cfg, name=str(configs[-1]), files=False)


def model_overrides(args: list[str]) -> list[str]:
    """Dotted model overrides from the command line as an OmegaConf dotlist:
    ``["--model.init_args.scale", "4", "--model.init_args.width=2"]`` ->
    ``["model.init_args.scale=4", "model.init_args.width=2"]``.

    Raises:
        ConfigError: an argument is not a ``--model.<key> VALUE`` / ``--model.<key>=VALUE`` pair.
    """
    dotlist, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--model."):
            raise ConfigError(f"hdrlab info: unknown argument {arg!r}; it takes --config, --size, --json and "
                              "dotted model overrides such as --model.init_args.scale 4")
        if "=" in arg:
            dotlist.append(arg[2:])
            i += 1
        elif i + 1 < len(args):
            dotlist.append(f"{arg[2:]}={args[i + 1]}")
            i += 2
        else:
            raise ConfigError(f"hdrlab info: {arg} needs a value")
    return dotlist


def count_flops(method: Any, *, size: int = 512) -> int:
    """FLOPs (2 x MACs) of ``method.predict_image`` on a ``size x size`` example batch, without compute
    (under the fake-tensor mode the method was built in, or a new one)."""
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    method.eval()
    mode = detect_fake_mode(tuple(method.parameters())) or FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        batch = method.example_batch(batch_size=1, height=size, width=size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            method.predict_image(batch)
    return int(counter.get_total_flops())


def describe(configs: list[str], *, size: int = 512, overrides: list[str] | None = None) -> dict[str, Any]:
    """The ``--json`` report: method, domain, stride, trainable parameters, FLOPs. The method is built
    under ``FakeTensorMode`` (no memory is allocated for its parameters)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        method = load_experiment_model(configs, overrides=overrides)
    subnets = {name: sum(p.numel() for p in m.parameters() if p.requires_grad)
               for name, m in method.subnetworks().items()}
    total = sum(p.numel() for p in method.parameters() if p.requires_grad)
    return {
        "config": configs[-1],
        "method": type(method).__name__,
        "output_domain": method.output_domain,
        "stride": int(method.stride),
        "parameters": {"subnetworks": subnets, "total": total},
        "flops": count_flops(method, size=size),
        "flops_input": f"{size}x{size}",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hdrlab info", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="experiment YAML (repeatable)")
    parser.add_argument("--size", type=int, default=512, help="input side for the FLOP count")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args, rest = parser.parse_known_args(argv)
    info = describe(args.config, size=args.size, overrides=model_overrides(rest))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{info['method']} ({info['config']}), output {info['output_domain']}")
    table.add_column("sub-network")
    table.add_column("trainable parameters", justify="right")
    for name, n in info["parameters"]["subnetworks"].items():
        table.add_row(name, f"{n:,}")
    table.add_row("total", f"{info['parameters']['total']:,}", style="bold")
    console = Console()
    console.print(table)
    console.print(f"FLOPs (2 x MACs) at {info['flops_input']}: {info['flops'] / 1e9:,.2f} G")
    console.print(f"stride (inputs and crops are multiples of it): {info['stride']}")
    return 0
