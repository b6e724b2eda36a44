"""``hdrlab import-weights``: turn an official pretrained release into an hdrlab checkpoint.

::

    hdrlab import-weights METHOD OFFICIAL_FILE [OFFICIAL_FILE2] -o OUT.ckpt
        [--config experiments/<method>.yaml ...] [--width 1.0]

``METHOD`` names an official format of :data:`hdrlab.weights_import.FORMATS`:

* ``cevr``: the two CEVR networks, in this order: the increase-EV (B) model
  ``CEVR_NormNoAffine_Maps_GN_Bmodel/inc/final_model.pth`` and the decrease-EV (D) model
  ``CEVR_NormNoAffine_Maps_GN_Dmodel/dec/final_model.pth`` -> :class:`hdrlab.methods.cevr.CEVRMethod`.
* ``deep_recursive``: the two Deep Recursive HDRI generators, stop-up then stop-down
  (``<model>_stopup_G_param*.pkl``, ``<model>_stopdown_G_param*.pkl``, ``torch.save`` of their
  ``state_dict``) -> :class:`hdrlab.methods.deep_recursive.DeepRecursiveMethod`; the BatchNorm running
  statistics they carry are dropped under the official ``batch_statistics: true`` (the official test
  normalises by the batch), kept with ``batch_statistics: false``.
* ``kim2021``: the six Kim et al. 2021 networks, in the official load order ``<step>-gu.ckpt``,
  ``-gd``, ``-su``, ``-sd``, ``-cbu``, ``-cbd`` (global, structure, refinement; up then down) ->
  :class:`hdrlab.methods.kim2021.Kim2021Method`.
* ``drtmo``: the two DrTMO Chainer models (``serializers.save_npz`` archives), up-exposure then
  down-exposure (``upexposure_model.chainer``, ``downexposure_model.chainer``) ->
  :class:`hdrlab.methods.drtmo.DrTMOMethod` (``levels: 9``); the colour axes of the first
  convolution and the last deconvolution are reversed (the official network works in BGR).
* ``ahdrnet``: the official AHDRNet model file (``trained-model/ahdr_model.pt``) ->
  :class:`hdrlab.methods.ahdrnet.AHDRNet`.
* ``hdrcnn``: ``hdrcnn_params.npz`` (TensorLayer ``save_npz``: the 80 arrays in layer order, or named
  arrays) -> :class:`hdrlab.methods.hdrcnn.HDRCNNMethod`; TensorFlow kernel layouts are permuted.
* ``cfnet``: the official CF-Net ``model/model_x2.pth`` (``model_x4.pth`` with a config setting
  ``scale: 4``) -> :class:`hdrlab.methods.cfnet.CFNetMethod`; the colour axes of both input
  convolutions and of every reconstruction output convolution are reversed (official BGR).
* ``singlehdr``: the fine-tuned SingleHDR TensorFlow 1 checkpoint, given as
  ``ckpt_deq_lin_hal_ref/model.ckpt.index`` (its ``.data-*`` shard beside it), read without TensorFlow
  (:mod:`hdrlab.tf_checkpoint`) -> :class:`hdrlab.methods.singlehdr.SingleHDRMethod`; kernels are
  transposed, Adam slots dropped; the EMoR curves come from ``emor_path``.
* ``duhdr`` / ``duhdr_dnet``: DuHDR's released TensorFlow 1 checkpoints ``ckpt/ckpt_inet/model.ckpt.index``
  (Dnet, INnet and Nnet, whose trunk is INnet's, so it fills both; build with ``--config experiments/duhdr.yaml
  --config experiments/overrides/duhdr_official_crf.yaml`` for Nnet's ``fc11`` head, its rows permuted from
  TF's NHWC flatten) and ``ckpt/ckpt_dnet/model.ckpt.index`` (Dnet only) ->
  :class:`hdrlab.methods.duhdr.DuHDRMethod`; ITnet, OOnet and the learnable Q have no released checkpoint
  and keep their built values.
* ``expandnet``: the official ``weights.pth`` -> :class:`hdrlab.methods.expandnet.ExpandNetMethod`.
* ``le2023``: the Le et al. 2023 Lightning checkpoint of ``EDNet`` (one file; its content-loss VGG19
  is dropped) -> :class:`hdrlab.methods.le2023_multiexposure.Le2023Method` (``levels: 7``).

The method is built from the experiment config (default ``experiments/<method>.yaml`` in the
working folder; later ``--config`` files override earlier ones, e.g. ``experiments/overrides/tiny.yaml``)
at ``--width`` (1.0 = the official size) with its file options cleared; the official tensors are
renamed (and, where the format says so, transformed) into its networks and checked key by key: an
unknown, missing or mis-shaped tensor stops the import with one line naming the official key and
the shape the hdrlab network expects. Every other tensor of the method (discriminators, merger and
loss buffers) keeps its freshly built value, so the checkpoint is complete for strict loading.

Written (atomically):

* ``OUT.ckpt``: ``{"state_dict", "hdrlab", "hdrlab_import", "pytorch-lightning_version", "epoch",
  "global_step"}``; ``hdrlab_import`` records the format, the official files (name, sha256) and
  the configs. It loads with ``hdrlab test --config <the same configs> --ckpt_path OUT.ckpt``, as a
  composite's ``generator_ckpt`` (``TwoStage(generator_ckpt=OUT.ckpt)``), and with
  ``hdrlab reconstruct ... --ckpt OUT.ckpt`` (which finds ``OUT.config.yaml`` next to it);
* ``OUT.config.yaml``: the resolved ``model`` section (plus ``width``) that ``hdrlab reconstruct``
  rebuilds the method from.

Nothing is downloaded: the official files must be on disk. Exit status 0; bad input exits 2 with
one line (:class:`~hdrlab.errors.ConfigError` / :class:`~hdrlab.errors.HDRIOError`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from hdrlab.errors import ConfigError, HDRIOError
from hdrlab.weights_import import FORMATS, check_against, official_format


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hdrlab import-weights",
        description="Convert an official pretrained release into an hdrlab checkpoint (nothing is downloaded).",
    )
    p.add_argument("method", choices=sorted(FORMATS), help="whose official weights the files are")
    p.add_argument("files", nargs="+", metavar="OFFICIAL_FILE",
                   help="the official weights file(s), in the order the method lists (e.g. cevr: increase, decrease)")
    p.add_argument("-o", "--output", required=True, help="the hdrlab checkpoint to write (.ckpt)")
    p.add_argument("--config", action="append", default=None,
                   help="experiment YAML(s) the method is built from (default experiments/<method>.yaml; repeat to "
                        "add overrides)")
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier of the method (default: the configs' width, else 1.0 = official)")
    return p


def _config_width(configs: list[Path]) -> float:
    """The top-level ``width`` the last config setting one gives (1.0 when none does)."""
    import yaml

    width = 1.0
    for path in configs:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {path} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from err
        if isinstance(data, dict) and isinstance(data.get("width"), (int, float)):
            width = float(data["width"])
    return width


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_weights(method: str, files: list[str | Path], output: str | Path, *,
                   configs: list[str | Path] | None = None, width: float | None = None) -> Path:
    """Convert official files into ``output`` (and ``output``'s ``.config.yaml``); returns ``output``.

    Raises:
        ConfigError: unknown method, wrong number of files, keys or shapes that do not fit.
        HDRIOError: unreadable input, output folder missing.
    """
    import lightning
    import torch
    import yaml

    from hdrlab.budget.methods import load_experiment_config
    from hdrlab.io import _atomic_write
    from hdrlab.methods.build import build_method

    fmt = official_format(method)
    output = Path(output)
    if output.suffix != ".ckpt":
        raise ConfigError(f"-o {output}: give a .ckpt file name (the config goes next to it as "
                          f"{output.stem}.config.yaml)")
    if not output.parent.is_dir():
        raise HDRIOError(f"-o {output}: folder {output.parent} does not exist; create it first")
    if len(files) != len(fmt.files):
        raise ConfigError(f"{method} takes {len(fmt.files)} official file(s), in this order: "
                          f"{'; '.join(fmt.files)}; got {len(files)}")
    configs = [Path(c) for c in (configs or [fmt.experiment])]
    for path in configs:
        if not path.is_file():
            raise ConfigError(f"--config {path} does not exist; run from the repository folder or pass "
                              f"--config <path to>/{Path(fmt.experiment).name}")
    if width is None:
        width = _config_width(configs)
    cfg = load_experiment_config(configs, width=width)
    class_path = str(cfg["model"].get("class_path", ""))
    if class_path.rpartition(".")[2] != fmt.method_class.rpartition(".")[2]:
        raise ConfigError(f"--config {configs[0]} builds {class_path or 'no model'}, but {method} weights fill "
                          f"{fmt.method_class}; give experiments/{method}.yaml or a config of that method")
    model = build_method(cfg["model"], name=str(configs[0]), files=False)
    target = model.state_dict()
    converted = fmt.convert([fmt.reader(Path(f)) for f in files])
    hint = (f" at width={width:g}; official releases need width 1" if width != 1 else
            "; the file is not the official release (or it was saved at another width: pass --width)")
    converted = check_against(fmt, converted, target, hint=hint)
    state = {k: (converted[k] if k in converted else v).detach().clone().contiguous() for k, v in target.items()}
    checkpoint: dict[str, Any] = {
        "state_dict": state,
        "hdrlab": {"samples_seen": 0},
        "hdrlab_import": {
            "format": method,
            "method": fmt.method_class,
            "files": [{"name": Path(f).name, "sha256": _sha256(Path(f))} for f in files],
            "configs": [str(c) for c in configs],
            "width": float(width),
        },
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    config_path = output.with_name(f"{output.stem}.config.yaml")
    run_config = {"model": cfg["model"], "width": float(width)}
    _atomic_write(config_path, lambda tmp: Path(tmp).write_text(yaml.safe_dump(run_config, sort_keys=False)))
    _atomic_write(output, lambda tmp: torch.save(checkpoint, tmp))
    return output


def main(argv: list[str]) -> int:
    """Runs ``hdrlab import-weights``; 0 on success (user errors raise and exit 2 through the CLI)."""
    args = _parser().parse_args(argv)
    out = import_weights(args.method, args.files, args.output, configs=args.config, width=args.width)
    configs = " ".join(f"--config {c}" for c in (args.config or [official_format(args.method).experiment]))
    width = "" if args.width is None else f" --width {args.width:g}"
    print(f"wrote {out} and {out.with_name(out.stem + '.config.yaml')}\n"
          f"  test:        hdrlab test {configs}{width} "
          f"--ckpt_path {out}\n"
          f"  reconstruct: hdrlab reconstruct IMAGE -o OUT_DIR --ckpt {out}", file=sys.stderr)
    return 0
