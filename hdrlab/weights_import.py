"""Official pretrained files -> hdrlab state dicts: one key/tensor mapping per method.

Each :class:`OfficialFormat` describes how the networks of an official release map onto an hdrlab
method: which files the release has (one per network, e.g. CEVR's increase/decrease models), the
hdrlab module prefix each file fills (``generator.increase.``), and a pure per-key mapping in both
directions (official name -> hdrlab name relative to that prefix, and back), with an optional
per-tensor transform (e.g. a flipped channel axis). :meth:`OfficialFormat.convert` turns the official
state dicts into the method's ``state_dict`` entries; :meth:`OfficialFormat.inverse` goes back, so
``inverse(convert(official)) == official`` for every tensor the hdrlab network holds.

:func:`check_against` compares converted tensors with the state dict of the hdrlab method they go
into and raises one :class:`~hdrlab.errors.ConfigError` naming the first offending *official* key
(unknown, missing, or of the wrong shape) and the shape the hdrlab network expects.

The formats know nothing of the official code at run time: names and shapes come from the hdrlab
modules through the mapping (``hdrlab import-weights`` builds the method and checks against it).
:data:`FORMATS` lists them by the ``hdrlab import-weights`` method name. This module never downloads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hdrlab.errors import ConfigError, HDRIOError

__all__ = [
    "FORMATS",
    "OfficialFormat",
    "check_against",
    "official_format",
    "read_npz_state",
    "read_official_state",
]

State = dict[str, torch.Tensor]
#: official key (relative to the file) -> hdrlab key relative to the network prefix; None = known, dropped
KeyMap = Callable[[str], "str | None"]


def _identity_tensor(_key: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class OfficialFormat:
    """How one method's official release maps onto an hdrlab method.

    Attributes:
        name: the ``hdrlab import-weights`` method name (``cevr``).
        title: human-readable name for messages.
        method_class: class path of the hdrlab method the files fill.
        experiment: default experiment config (relative to the working folder).
        files: what each official file is, in command-line order.
        prefixes: hdrlab ``state_dict`` prefix each file's network goes under (same order as ``files``).
        to_hdrlab: official key -> hdrlab key below the prefix (``None``: a known official tensor the
            hdrlab network does not hold, dropped); raises ``KeyError`` for an unknown key. One map for
            every file, or a tuple of one map per file (releases whose networks differ, e.g. Kim 2021).
        to_official: hdrlab key below the prefix -> official key (the inverse of ``to_hdrlab``); one
            map, or one per file as ``to_hdrlab``.
        tensor_to_hdrlab: ``(official key, tensor) -> tensor`` (identity for most formats).
        tensor_to_official: ``(hdrlab key below the prefix, tensor) -> tensor``, inverse of the above.
        reader: reads one official file into a flat ``{key: tensor}``.
    """

    name: str
    title: str
    method_class: str
    experiment: str
    files: tuple[str, ...]
    prefixes: tuple[str, ...]
    to_hdrlab: KeyMap | tuple[KeyMap, ...]
    to_official: Callable[[str], str] | tuple[Callable[[str], str], ...]
    tensor_to_hdrlab: Callable[[str, torch.Tensor], torch.Tensor] = _identity_tensor
    tensor_to_official: Callable[[str, torch.Tensor], torch.Tensor] = _identity_tensor
    reader: Callable[[Path], State] = field(default=lambda path: read_official_state(path))
    #: hdrlab key endings that a method may leave out depending on its options (e.g. BatchNorm
    #: running statistics under ``track_running_stats=False``): dropped when the target lacks them
    optional: tuple[str, ...] = ()
    #: hdrlab key endings that no official file holds (BatchNorm ``num_batches_tracked`` of a
    #: TensorFlow release, buffers filled from other files): not required by :func:`check_against`,
    #: not written by :meth:`inverse`; the method keeps its built values
    kept: tuple[str, ...] = ()

    def key_to_hdrlab(self, key: str, index: int) -> str | None:
        """Official key of file ``index`` -> hdrlab key below its prefix (``KeyError``: unknown key)."""
        return (self.to_hdrlab[index] if isinstance(self.to_hdrlab, tuple) else self.to_hdrlab)(key)

    def key_to_official(self, key: str, index: int) -> str:
        """hdrlab key below prefix ``index`` -> official key of that file."""
        return (self.to_official[index] if isinstance(self.to_official, tuple) else self.to_official)(key)

    def _hdrlab_key(self, key: str, index: int) -> str | None:
        try:
            return self.key_to_hdrlab(key, index)
        except KeyError:
            raise ConfigError(
                f"{self.title} {self.files[index]} holds {key!r}, which the {self.title} network has no "
                f"tensor for; give the official {self.title} release file ({self.files[index]})"
            ) from None

    def convert(self, states: Sequence[Mapping[str, torch.Tensor]]) -> State:
        """Official state dicts (one per entry of :attr:`files`) -> hdrlab ``state_dict`` entries.

        Raises:
            ConfigError: wrong number of files, an unknown official key, or two keys mapping to one.
        """
        if len(states) != len(self.files):
            raise ConfigError(f"{self.title} needs {len(self.files)} official file(s) ({', '.join(self.files)}), "
                              f"got {len(states)}")
        out: State = {}
        for index, (state, prefix) in enumerate(zip(states, self.prefixes)):
            for key, tensor in state.items():
                target = self._hdrlab_key(key, index)
                if target is None:
                    continue
                full = prefix + target
                if full in out:
                    raise ConfigError(f"{self.title} {self.files[index]}: {key!r} maps onto {full!r} twice; "
                                      "the file is not an official release")
                out[full] = self.tensor_to_hdrlab(key, tensor)
        return out

    def inverse(self, state: Mapping[str, torch.Tensor]) -> list[State]:
        """hdrlab ``state_dict`` (the method's, or only its networks' entries) -> official state dicts.

        Keys outside :attr:`prefixes` (discriminators, mergers, losses) are ignored; official tensors
        the hdrlab network does not hold (``to_hdrlab`` gives ``None``) are not recreated.
        """
        out: list[State] = [{} for _ in self.prefixes]
        for key, tensor in state.items():
            for index, prefix in enumerate(self.prefixes):
                if key.startswith(prefix):
                    rel = key[len(prefix):]
                    if not (self.kept and rel.endswith(self.kept)):
                        out[index][self.key_to_official(rel, index)] = self.tensor_to_official(rel, tensor)
                    break
        return out

    def official_name(self, hdrlab_key: str) -> str:
        """``"<file>: <official key>"`` of an hdrlab key (for messages)."""
        for index, prefix in enumerate(self.prefixes):
            if hdrlab_key.startswith(prefix):
                return f"{self.files[index]}: {self.key_to_official(hdrlab_key[len(prefix):], index)!r}"
        return repr(hdrlab_key)


def check_against(fmt: OfficialFormat, converted: Mapping[str, torch.Tensor],
                  target: Mapping[str, torch.Tensor], *, hint: str = "") -> State:
    """Check converted tensors against the state dict of the hdrlab method they go into.

    Every converted key must exist in ``target`` with the same shape (keys ending in one of
    ``fmt.optional`` that ``target`` lacks are dropped), and every ``target`` key under the
    format's prefixes must be converted (except those ending in one of ``fmt.kept``).

    Returns:
        The converted tensors that go into ``target``.

    Raises:
        ConfigError: one line naming the first offending official key and the expected shape.
    """
    converted = {k: v for k, v in converted.items()
                 if k in target or not (fmt.optional and k.endswith(fmt.optional))}
    for key in sorted(converted):
        if key not in target:
            raise ConfigError(f"{fmt.title} {fmt.official_name(key)} has no counterpart in {fmt.method_class} "
                              f"(hdrlab key {key!r}); give the official {fmt.title} release files")
        have, want = tuple(converted[key].shape), tuple(target[key].shape)
        if have != want:
            raise ConfigError(f"{fmt.title} {fmt.official_name(key)} has shape {have} but the hdrlab network "
                              f"expects {want}{hint}")
    for key in sorted(target):
        if key.startswith(fmt.prefixes) and key not in converted and not (fmt.kept and key.endswith(fmt.kept)):
            raise ConfigError(f"{fmt.title} {fmt.official_name(key)} is missing (expected shape "
                              f"{tuple(target[key].shape)}); give the complete official file")
    return converted


# ----------------------------------------------------------------------------- reading files
def _flat_tensors(obj: object, path: Path) -> State:
    """A flat ``{key: tensor}`` out of a loaded file (a bare state dict, or one under
    ``state_dict`` / ``model`` / ``state``); a common ``module.`` prefix (DataParallel) is removed."""
    if isinstance(obj, Mapping) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "state"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HDRIOError(f"{path} holds no state dict of tensors; give the official weights file (.pth/.ckpt)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def read_official_state(path: str | Path) -> State:
    """Read an official PyTorch (``.pth`` / ``.pt`` / ``.ckpt``) or NumPy (``.npz``) weights file.

    PyTorch files are read with ``torch.load(..., weights_only=True)`` (no code from the file runs).

    Raises:
        HDRIOError: the file is missing, unreadable, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"{path} does not exist; give the path of the official weights file")
    if path.suffix.lower() == ".npz":
        return read_npz_state(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HDRIOError(f"{path} is not a PyTorch weights file readable without running its code ({first[:200]}); "
                         "save its state_dict() with torch.save and give that file") from err
    return _flat_tensors(obj, path)


def read_npz_state(path: str | Path) -> State:
    """Read a NumPy ``.npz`` archive (whatever its suffix, e.g. Chainer's ``serializers.save_npz``
    files named ``*.chainer``) into ``{key: tensor}``; nothing in it is unpickled.

    Raises:
        HDRIOError: the file is missing, not an ``.npz`` archive, or empty.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"{path} does not exist; give the path of the official weights file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive")
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    except (OSError, ValueError) as err:
        raise HDRIOError(f"{path} is not a readable NumPy .npz archive ({err}); give the official weights "
                         "file (Chainer serializers.save_npz)") from err
    if not state:
        raise HDRIOError(f"{path} holds no arrays; give the official weights file")
    return state


# ----------------------------------------------------------------------------- CEVR
#: CEVR encoder stages: official ``encoder1/2/3`` are ``vgg16_bn().features[0:6]``, ``[6:13]``,
#: ``[13:23]`` (slices keep the feature indices), hdrlab's ``encoder`` is ``features[0:23]``.
_CEVR_STAGE_ENDS = (6, 13, 23)
_CEVR_ENCODER = re.compile(r"encoder([123])\.(\d+)\.(.+)")
_CEVR_DECODER = re.compile(r"decoder([345])\.(.+)")
_CEVR_OWN = re.compile(r"(neck\.mlp\.layers\.\d+|conv_mul|conv_rgb)\.(weight|bias)")


def _cevr_to_hdrlab(key: str) -> str:
    """Official ``CEVR_NormNoAffine_Maps`` key -> :class:`~hdrlab.models.generators.cevr.CEVRNet` key."""
    if m := _CEVR_ENCODER.fullmatch(key):
        stage, index = int(m[1]) - 1, int(m[2])
        if not (_CEVR_STAGE_ENDS[stage - 1] if stage else 0) <= index < _CEVR_STAGE_ENDS[stage]:
            raise KeyError(key)
        return f"encoder.{index}.{m[3]}"
    if m := _CEVR_DECODER.fullmatch(key):
        return f"decoders.{int(m[1]) - 3}.{m[2]}"
    if _CEVR_OWN.fullmatch(key):
        return key
    raise KeyError(key)


def _cevr_to_official(key: str) -> str:
    if key.startswith("encoder."):
        index = int(key.split(".")[1])
        stage = next(n for n, end in enumerate(_CEVR_STAGE_ENDS) if index < end)
        return f"encoder{stage + 1}.{key[len('encoder.'):]}"
    if key.startswith("decoders."):
        _, index, rest = key.split(".", 2)
        return f"decoder{int(index) + 3}.{rest}"
    return key


CEVR = OfficialFormat(
    name="cevr",
    title="CEVR",
    method_class="hdrlab.methods.cevr.CEVRMethod",
    experiment="experiments/cevr.yaml",
    files=("increase-EV model (CEVR_NormNoAffine_Maps_GN_Bmodel/inc/final_model.pth)",
           "decrease-EV model (CEVR_NormNoAffine_Maps_GN_Dmodel/dec/final_model.pth)"),
    prefixes=("generator.increase.", "generator.decrease."),
    to_hdrlab=_cevr_to_hdrlab,
    to_official=_cevr_to_official,
)

# ----------------------------------------------------------------------------- Deep Recursive HDRI
#: official ``model.Generator`` blocks -> :class:`~hdrlab.models.generators.deep_recursive.DeepRecursiveUNet`
#: (``ConvBlock``: ``conv``, ``bn``, ``act``; ``Upsample2xBlock``: ``upsample.1`` is that ConvBlock)
_DR_ENCODERS = ("input_conv", "conv1", "conv2", "conv3", "conv4")
_DR_DECODERS = ("deconv4", "deconv5", "deconv6", "deconv7", "output_deconv")
_DR_BLOCK = re.compile(r"(\w+?)\.(?:upsample\.1\.)?(conv|bn|act)\.(\w+)")


def _deep_recursive_to_hdrlab(key: str) -> str:
    """Official ``Generator`` key -> ``DeepRecursiveUNet`` key (``input_conv`` has no BatchNorm)."""
    if key == "output.conv.weight":
        return "head.weight"
    m = _DR_BLOCK.fullmatch(key)
    if m is None:
        raise KeyError(key)
    block, part, name = m[1], m[2], m[3]
    nested = ".upsample.1." in key
    if block in _DR_ENCODERS and not nested:
        index = _DR_ENCODERS.index(block)
        slots = {"conv": 0, "act": 1} if index == 0 else {"conv": 0, "bn": 1, "act": 2}
        if part not in slots:
            raise KeyError(key)
        return f"encoders.{index}.{slots[part]}.{name}"
    if block in _DR_DECODERS and nested:
        return f"decoders.{_DR_DECODERS.index(block)}.{ {'conv': 1, 'bn': 2, 'act': 3}[part]}.{name}"
    raise KeyError(key)


def _deep_recursive_to_official(key: str) -> str:
    if key == "head.weight":
        return "output.conv.weight"
    group, index, slot, name = key.split(".", 3)
    if group == "encoders":
        part = ("conv", "act")[int(slot)] if index == "0" else ("conv", "bn", "act")[int(slot)]
        return f"{_DR_ENCODERS[int(index)]}.{part}.{name}"
    return f"{_DR_DECODERS[int(index)]}.upsample.1.{('', 'conv', 'bn', 'act')[int(slot)]}.{name}"


DEEP_RECURSIVE = OfficialFormat(
    name="deep_recursive",
    title="Deep Recursive HDRI",
    method_class="hdrlab.methods.deep_recursive.DeepRecursiveMethod",
    experiment="experiments/deep_recursive.yaml",
    files=("stop-up generator (<model>_stopup_G_param*.pkl)", "stop-down generator (<model>_stopdown_G_param*.pkl)"),
    prefixes=("generator.up.", "generator.down."),
    to_hdrlab=_deep_recursive_to_hdrlab,
    to_official=_deep_recursive_to_official,
    # the official checkpoints carry BatchNorm running statistics that its test never uses (it
    # normalises by the batch); hdrlab's batch_statistics=True holds none, so they are dropped then
    optional=("running_mean", "running_var", "num_batches_tracked"),
)

# ----------------------------------------------------------------------------- Kim et al. 2021
#: official ``Generator_up/down``, ``Structure_up/down``, ``CombineNet_up/down`` (``model/*.py``):
#: ``init_layers = Sequential(ConvBlock)``, ``down_layers = Sequential(DoubleBlock, pool, ...)``
#: (blocks at even indices), ``up_layers = Sequential(Upsample, DoubleBlock, ...)`` (blocks at odd
#: indices), ``inter_layers`` a ``Recurrent_unit`` (``gru_block``, ``conv_block``) or, in
#: ``CombineNet``, ``Sequential(ConvBlock)``; ``ConvBlock``: ``conv``, ``norm`` (CIN:
#: ``batch_InstanceNorm2d.inns.<style>``). hdrlab: :class:`~hdrlab.models.generators.kim2021.KimGlobalNet`,
#: :class:`~hdrlab.models.generators.kim2021.KimStructureNet`, :class:`~hdrlab.models.generators.kim2021.KimRefineNet`
_KIM_BLOCK = re.compile(r"(down|up)_layers\.(\d+)\.(conv[12])\.(.+)")
_KIM_CONV = re.compile(r"conv\.(weight|bias)|norm\.(?:inns\.(\d+)\.)?(weight|bias)")
#: per network: official head name -> hdrlab name
_KIM_HEADS = {"global": {"out_conv": "head"}, "structure": {"out_conv": "out_conv", "final_conv": "final"},
              "refine": {"out_conv": "head"}}


def _kim_conv_block(rest: str, key: str) -> str:
    """``ConvBlock`` tail (``conv.weight``, ``norm.inns.2.bias``, ``norm.weight``) -> hdrlab ``KimConvBlock`` tail."""
    m = _KIM_CONV.fullmatch(rest)
    if m is None:
        raise KeyError(key)
    if m[1]:
        return rest
    return f"norm.norms.{m[2]}.{m[3]}" if m[2] is not None else f"norm.{m[3]}"


def _kim_to_hdrlab(key: str, *, net: str) -> str:
    """Official key of one Kim 2021 network (``net``: ``global``, ``structure``, ``refine``) -> hdrlab key."""
    if key.startswith("init_layers.0."):
        return "init." + _kim_conv_block(key[len("init_layers.0."):], key)
    if m := _KIM_BLOCK.fullmatch(key):
        index = int(m[2])
        if (index % 2) != (m[1] == "up"):
            raise KeyError(key)  # pools / upsamplings hold no tensors
        return f"{m[1]}.{index // 2}.{m[3]}.{_kim_conv_block(m[4], key)}"
    if net == "refine":
        if key.startswith("inter_layers.0."):
            return "middle." + _kim_conv_block(key[len("inter_layers.0."):], key)
    elif m := re.fullmatch(r"inter_layers\.gru_block\.(reset_gate|update_gate|out_gate)\.(weight|bias)", key):
        return f"middle.gru.{m[1]}.{m[2]}"
    elif m := re.fullmatch(r"inter_layers\.conv_block\.(conv[12])\.(.+)", key):
        return f"middle.block.{m[1]}.{_kim_conv_block(m[2], key)}"
    head, _, rest = key.partition(".")
    if head in _KIM_HEADS[net]:
        return f"{_KIM_HEADS[net][head]}.{_kim_conv_block(rest, key)}"
    raise KeyError(key)


def _kim_conv_official(rest: str) -> str:
    m = re.fullmatch(r"norm\.norms\.(\d+)\.(weight|bias)", rest)
    return f"norm.inns.{m[1]}.{m[2]}" if m else rest


def _kim_to_official(key: str, *, net: str) -> str:
    part, _, rest = key.partition(".")
    if part == "init":
        return f"init_layers.0.{_kim_conv_official(rest)}"
    if part in ("down", "up"):
        index, conv, tail = rest.split(".", 2)
        return f"{part}_layers.{2 * int(index) + (part == 'up')}.{conv}.{_kim_conv_official(tail)}"
    if part == "middle":
        if net == "refine":
            return f"inter_layers.0.{_kim_conv_official(rest)}"
        sub, _, tail = rest.partition(".")
        if sub == "gru":
            return f"inter_layers.gru_block.{tail}"
        conv, _, tail = tail.partition(".")
        return f"inter_layers.conv_block.{conv}.{_kim_conv_official(tail)}"
    official = {v: k for k, v in _KIM_HEADS[net].items()}
    return f"{official[part]}.{_kim_conv_official(rest)}"


_KIM_NETS = ("global", "global", "structure", "structure", "refine", "refine")

KIM2021 = OfficialFormat(
    name="kim2021",
    title="Kim 2021",
    method_class="hdrlab.methods.kim2021.Kim2021Method",
    experiment="experiments/kim2021.yaml",
    files=("global up network (<step>-gu.ckpt)", "global down network (<step>-gd.ckpt)",
           "structure up network (<step>-su.ckpt)", "structure down network (<step>-sd.ckpt)",
           "refinement up network (<step>-cbu.ckpt)", "refinement down network (<step>-cbd.ckpt)"),
    prefixes=("generator.net.up.global_net.", "generator.net.down.global_net.",
              "generator.net.up.structure_net.", "generator.net.down.structure_net.",
              "generator.net.up.refine_net.", "generator.net.down.refine_net."),
    to_hdrlab=tuple(functools.partial(_kim_to_hdrlab, net=net) for net in _KIM_NETS),
    to_official=tuple(functools.partial(_kim_to_official, net=net) for net in _KIM_NETS),
)

# ----------------------------------------------------------------------------- DrTMO
#: official Chainer ``CNNAE3D512`` (``network.py``) -> :class:`~hdrlab.models.generators.drtmo.DrTMONet`
#: at the official ``levels=9``: ``c0..c8`` (Convolution2D ``W`` ``(out, in, kh, kw)``, ``b``),
#: ``bnc1..bnc8``, ``dc00, dc0..dc7`` (DeconvolutionND ``W`` ``(in, out, kd, kh, kw)``, the layout of
#: ``ConvTranspose3d``), ``bndc00, bndc0..bndc6``; BatchNormalization ``gamma``, ``beta`` and the
#: persistent ``avg_mean``, ``avg_var``, ``N`` (batches seen)
_DRTMO_BN = {"gamma": "weight", "beta": "bias", "avg_mean": "running_mean", "avg_var": "running_var",
             "N": "num_batches_tracked"}
_DRTMO_KEY = re.compile(r"(c|bnc|dc|bndc)(00|\d)/(\w+)")
#: the first encoder layer reads and the last decoder layer writes colour channels: BGR officially
_DRTMO_COLOUR = {"c0/W": 1, "dc7/W": 1, "dc7/b": 0}
_DRTMO_COLOUR_HDRLAB = {"convs.0.weight": 1, "deconvs.8.weight": 1, "deconvs.8.bias": 0}


def _drtmo_to_hdrlab(key: str) -> str:
    """Official ``CNNAE3D512`` key (``c3/W``, ``bndc00/avg_var``) -> ``DrTMONet`` key (``levels=9``)."""
    m = _DRTMO_KEY.fullmatch(key)
    if m is None:
        raise KeyError(key)
    layer, index, name = m[1], m[2], m[3]
    if layer in ("c", "bnc"):
        if index == "00" or (layer == "bnc" and index == "0"):
            raise KeyError(key)  # c0 has no BatchNorm
        slot = int(index)
    else:
        slot = 0 if index == "00" else int(index) + 1
        if slot > (8 if layer == "dc" else 7):
            raise KeyError(key)
    if layer in ("c", "dc"):
        if name not in ("W", "b"):
            raise KeyError(key)
        return f"{'convs' if layer == 'c' else 'deconvs'}.{slot}.{'weight' if name == 'W' else 'bias'}"
    if name not in _DRTMO_BN:
        raise KeyError(key)
    return f"{'conv_norms' if layer == 'bnc' else 'deconv_norms'}.{slot}.{_DRTMO_BN[name]}"


def _drtmo_to_official(key: str) -> str:
    group, slot, name = key.split(".")
    index = int(slot)
    if group in ("convs", "conv_norms"):
        layer, number = ("c" if group == "convs" else "bnc"), str(index)
    else:
        layer, number = ("dc" if group == "deconvs" else "bndc"), ("00" if index == 0 else str(index - 1))
    if group in ("convs", "deconvs"):
        return f"{layer}{number}/{'W' if name == 'weight' else 'b'}"
    return f"{layer}{number}/{ {v: k for k, v in _DRTMO_BN.items()}[name]}"


def _drtmo_tensor_to_hdrlab(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if key.endswith("/N"):
        return tensor.to(torch.long)  # Chainer keeps a Python int (saved as a 0-d array)
    return tensor.flip(_DRTMO_COLOUR[key]) if key in _DRTMO_COLOUR else tensor


def _drtmo_tensor_to_official(key: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.flip(_DRTMO_COLOUR_HDRLAB[key]) if key in _DRTMO_COLOUR_HDRLAB else tensor


DRTMO = OfficialFormat(
    name="drtmo",
    title="DrTMO",
    method_class="hdrlab.methods.drtmo.DrTMOMethod",
    experiment="experiments/drtmo.yaml",
    files=("up-exposure model (models/upexposure_model.chainer)",
           "down-exposure model (models/downexposure_model.chainer)"),
    prefixes=("generator.up.", "generator.down."),
    to_hdrlab=_drtmo_to_hdrlab,
    to_official=_drtmo_to_official,
    # the official network reads and writes OpenCV's BGR order, hdrlab RGB: the colour axes of the
    # first convolution's input and the last deconvolution's output (weight and bias) are reversed
    tensor_to_hdrlab=_drtmo_tensor_to_hdrlab,
    tensor_to_official=_drtmo_tensor_to_official,
    reader=lambda path: read_npz_state(path),
)

# ----------------------------------------------------------------------------- Le 2023
#: official Lightning ``EDNet`` (``src/models/ednet.py``) sub-networks -> attributes of
#: :class:`~hdrlab.models.generators.le2023_multiexposure.Le2023MultiExposureNet`; each is a
#: ``BaseUNet`` (``src/architectures/base_unet.py``) with ``nlayers=7``: ``enc1..enc7`` and
#: ``dec7..dec2`` (``UNetEncBlock`` / ``UNetDecBlock``: ``blk`` = conv, BN, Mish, conv, BN, Mish),
#: ``up7..up2`` (``SubPixelUpsampling``: ``conv_shuffle``, ``abn`` = BN, Mish, PixelShuffle) and
#: ``dec1`` (``Sequential(Conv2d 1x1, act)``); ``loss_fn.*`` (the VGG19 of the content loss) is dropped
_LE2023_NETS = {"HDREncNet": "hdr_encoder", "UpExposureNet": "up_exposure", "DownExposureNet": "down_exposure"}
_LE2023_LEVELS = 7
_LE2023_KEY = re.compile(r"(enc|dec)(\d)\.blk\.([0134])\.(\w+)|up(\d)\.(conv_shuffle|abn\.0)\.(\w+)|dec1\.0\.(weight|bias)")


def _le2023_to_hdrlab(key: str) -> str | None:
    """Official ``EDNet`` key -> ``Le2023MultiExposureNet`` key (``levels=7``); ``loss_fn.*`` -> ``None``."""
    if key.startswith("loss_fn."):
        return None
    net, _, rest = key.partition(".")
    m = _LE2023_KEY.fullmatch(rest)
    if net not in _LE2023_NETS or m is None:
        raise KeyError(key)
    if m[8]:
        return f"{_LE2023_NETS[net]}.head.{m[8]}"
    if m[1]:
        level = int(m[2])
        if m[1] == "enc" and 1 <= level <= _LE2023_LEVELS:
            return f"{_LE2023_NETS[net]}.encoders.{level - 1}.{m[3]}.{m[4]}"
        if m[1] == "dec" and 2 <= level <= _LE2023_LEVELS:
            return f"{_LE2023_NETS[net]}.decoders.{_LE2023_LEVELS - level}.{m[3]}.{m[4]}"
        raise KeyError(key)
    level = int(m[5])
    if not 2 <= level <= _LE2023_LEVELS or (m[6] == "conv_shuffle" and m[7] != "weight"):
        raise KeyError(key)  # the upsampling convolution has no bias (BatchNorm follows)
    return f"{_LE2023_NETS[net]}.upsamplers.{_LE2023_LEVELS - level}.{0 if m[6] == 'conv_shuffle' else 1}.{m[7]}"


def _le2023_to_official(key: str) -> str:
    net, group, rest = key.split(".", 2)
    official = {v: k for k, v in _LE2023_NETS.items()}[net]
    if group == "head":
        return f"{official}.dec1.0.{rest}"
    index, slot, name = rest.split(".", 2)
    if group == "encoders":
        return f"{official}.enc{int(index) + 1}.blk.{slot}.{name}"
    level = _LE2023_LEVELS - int(index)
    if group == "decoders":
        return f"{official}.dec{level}.blk.{slot}.{name}"
    return f"{official}.up{level}.{'conv_shuffle' if slot == '0' else 'abn.0'}.{name}"


LE2023 = OfficialFormat(
    name="le2023",
    title="Le 2023",
    method_class="hdrlab.methods.le2023_multiexposure.Le2023Method",
    experiment="experiments/le2023.yaml",
    files=("Lightning checkpoint of EDNet (pretrained.ckpt)",),
    prefixes=("generator.net.",),
    to_hdrlab=_le2023_to_hdrlab,
    to_official=_le2023_to_official,
)


# --------------------------------------------------------------------------- AHDRNet
#: official ``AHDR`` (qingsenyangit/AHDRNet ``model.py``) top-level layer -> ``AHDRNetMerger`` layer
_AHDRNET_LAYERS: dict[str, str] = {
    "conv1": "extract",
    "att11": "attend_low.conv_in",
    "att12": "attend_low.conv_out",
    "att31": "attend_high.conv_in",
    "att32": "attend_high.conv_out",
    "conv2": "merge_in",
    "GFF_1x1": "gff_1x1",
    "GFF_3x3": "gff_3x3",
    "conv_up": "conv_up",
    "conv3": "conv_out",
}
#: official layers that ``AHDR.forward`` never calls (2 x 36,928 parameters), not built in hdrlab
_AHDRNET_UNUSED: tuple[str, ...] = ("attConv1", "attConv3")


def _ahdrnet_to_hdrlab(key: str) -> str | None:
    """Official ``AHDR`` key -> ``AHDRNetMerger`` key; the unused ``attConv1/3`` -> ``None``."""
    head, _, rest = key.partition(".")
    if head in _AHDRNET_UNUSED:
        return None
    if head in _AHDRNET_LAYERS and rest in ("weight", "bias"):
        return f"{_AHDRNET_LAYERS[head]}.{rest}"
    match = re.fullmatch(r"RDB([123])\.(?:dense_layers\.(\d)\.conv|conv_1x1)\.(weight|bias)", key)
    if match is None:
        raise KeyError(key)
    block, layer, param = int(match.group(1)) - 1, match.group(2), match.group(3)
    return f"drdbs.{block}.dense.{layer}.{param}" if layer is not None else f"drdbs.{block}.fuse.{param}"


def _ahdrnet_to_official(key: str) -> str:
    layers = {v: k for k, v in _AHDRNET_LAYERS.items()}
    name, param = key.rsplit(".", 1)
    if name in layers:
        return f"{layers[name]}.{param}"
    _, block, kind, *layer = name.split(".")
    if kind == "dense":
        return f"RDB{int(block) + 1}.dense_layers.{layer[0]}.conv.{param}"
    return f"RDB{int(block) + 1}.conv_1x1.{param}"


AHDRNET = OfficialFormat(
    name="ahdrnet",
    title="AHDRNet",
    method_class="hdrlab.methods.ahdrnet.AHDRNet",
    experiment="experiments/ahdrnet.yaml",
    files=("official model file (trained-model/ahdr_model.pt)",),
    prefixes=("merger.",),
    to_hdrlab=_ahdrnet_to_hdrlab,
    to_official=_ahdrnet_to_official,
)


# --------------------------------------------------------------------------- HDRCNN
#: official TensorLayer ``network.model`` (gabrieleilertsen/hdrcnn ``network.py``) ->
#: :class:`~hdrlab.models.direct.hdrcnn.HDRCNN`. ``tl.files.save_npz(net.all_params)`` writes ONE
#: array, ``params``: a pickled object array of the 80 parameters in layer-creation order, without
#: names (``tl.files.assign_params`` loads it by position). Per layer: ``Conv2dLayer`` ``W_conv2d``
#: ``[kh, kw, in, out]``, ``b_conv2d``; ``DeConv2dLayer`` ``W_deconv2d`` ``[kh, kw, out, in]``,
#: ``b_deconv2d``; ``BatchNormLayer`` ``beta``, ``gamma``, ``moving_mean``, ``moving_variance``.
#: The names below are the TensorFlow variable names of that order; the reader names positions with them.
_HDRCNN_CONV = (("W_conv2d", "weight"), ("b_conv2d", "bias"))
_HDRCNN_DECONV = (("W_deconv2d", "weight"), ("b_deconv2d", "bias"))
_HDRCNN_BN = (("beta", "bias"), ("gamma", "weight"), ("moving_mean", "running_mean"),
              ("moving_variance", "running_var"))
#: pickle globals of a NumPy object array of arrays: the only ones the HDRCNN reader resolves
_NUMPY_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})


def _hdrcnn_layout() -> tuple[tuple[str, str], ...]:
    """(official variable name, ``HDRCNN`` key) of every official parameter, in the file's order."""
    layers = [(f"encoder/h{s + 1}/conv_{k + 1}", f"encoder.stages.{s}.{2 * k}", _HDRCNN_CONV)
              for s, count in enumerate((2, 2, 3, 3, 3)) for k in range(count)]
    layers += [("encoder/h6/conv", "latent_conv", _HDRCNN_CONV), ("encoder/h6/batch_norm", "latent_bn", _HDRCNN_BN)]
    for i in range(5):
        if i:
            layers.append((f"decoder/h{i + 1}/fuse_skip_connection", f"fuses.{i - 1}", _HDRCNN_CONV))
        layers += [(f"decoder/h{i + 1}/decon2d", f"ups.{i}.deconv", _HDRCNN_DECONV),
                   (f"decoder/h{i + 1}/decon2d/batch_norm_dc", f"ups.{i}.bn", _HDRCNN_BN)]
    layers += [("decoder/h6/fuse_skip_connection", "fuses.4", _HDRCNN_CONV),
               ("decoder/h7/conv2d", "head_conv", _HDRCNN_CONV),
               ("decoder/h7/batch_norm", "head_bn", _HDRCNN_BN),
               ("decoder/h7/fuse_skip_connection", "input_fuse", _HDRCNN_CONV)]
    return tuple((f"{official}/{o}", f"{ours}.{h}") for official, ours, params in layers for o, h in params)


#: the 80 official parameters in ``hdrcnn_params.npz`` order: (TensorFlow variable name, HDRCNN key)
HDRCNN_LAYOUT: tuple[tuple[str, str], ...] = _hdrcnn_layout()
_HDRCNN_TO_HDRLAB = dict(HDRCNN_LAYOUT)
_HDRCNN_TO_OFFICIAL = {ours: official for official, ours in HDRCNN_LAYOUT}


def _read_tensorlayer_list(path: Path, archive: object) -> list:
    """The arrays of a TensorLayer ``save_npz`` file (``params.npy``: a pickled object array);
    only NumPy's array constructors are resolved while unpickling, nothing else runs."""
    import io
    import pickle

    import numpy as np

    class _ArraysOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            if (module, name) not in _NUMPY_ARRAY_GLOBALS:
                raise pickle.UnpicklingError(f"{module}.{name} is not a NumPy array constructor")
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = "numpy._core." + module[len("numpy.core."):]
            return super().find_class(module, name)

    with archive.open("params.npy") as f:  # type: ignore[attr-defined]
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise HDRIOError(f"{path}: params.npy has .npy format version {version}; give the official "
                             "TensorLayer file (hdrcnn_params.npz)")
        shape, _, dtype = readers[version](f)
        if not dtype.hasobject or len(shape) != 1:
            raise HDRIOError(f"{path}: params holds one {dtype} array of shape {shape}, not TensorLayer's list of "
                             "parameters; give the official hdrcnn_params.npz")
        try:
            arrays = _ArraysOnly(io.BytesIO(f.read()), encoding="latin1").load()
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise HDRIOError(f"{path}: params could not be read as a list of NumPy arrays ({err}); give the "
                             "official hdrcnn_params.npz") from err
    if not all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays):
        raise HDRIOError(f"{path}: params holds something other than numeric arrays; give the official "
                         "hdrcnn_params.npz")
    return [torch.from_numpy(np.array(a)) for a in arrays]


def _read_hdrcnn(path: str | Path) -> State:
    """An HDRCNN weights file -> ``{official variable name: tensor}``.

    TensorLayer's positional file (one ``params`` list) is named by :data:`HDRCNN_LAYOUT`; entries
    beyond the 80 official ones are named ``params[<index>]``. An archive of named arrays (TensorFlow
    variable names, e.g. TensorLayer's ``save_npz_dict``) is read as is, less a ``:0`` suffix and the
    training script's ``siamese/`` scope.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise HDRIOError(f"{path} does not exist; give the path of the official weights file (hdrcnn_params.npz)")
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.namelist() == ["params.npy"]:
                arrays = _read_tensorlayer_list(path, archive)
                names = [HDRCNN_LAYOUT[i][0] if i < len(HDRCNN_LAYOUT) else f"params[{i}]" for i in range(len(arrays))]
                return dict(zip(names, arrays))
    except zipfile.BadZipFile as err:
        raise HDRIOError(f"{path} is not a NumPy .npz archive ({err}); give the official hdrcnn_params.npz") from err
    state = read_npz_state(path)
    return {re.sub(r":0$", "", re.sub(r"^siamese/", "", key)): tensor for key, tensor in state.items()}


def _hdrcnn_tensor_to_hdrlab(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """TF conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``; TF transposed conv ``[kh, kw, out, in]``
    -> ``ConvTranspose2d``'s ``[in, out, kh, kw]`` (the same axis permutation, no spatial flip)."""
    if key.endswith(("/W_conv2d", "/W_deconv2d")) and tensor.ndim == 4:
        return tensor.permute(3, 2, 0, 1).contiguous()
    return tensor


def _hdrcnn_tensor_to_official(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if key.endswith(".weight") and tensor.ndim == 4:
        return tensor.permute(2, 3, 1, 0).contiguous()
    return tensor


HDRCNN = OfficialFormat(
    name="hdrcnn",
    title="HDRCNN",
    method_class="hdrlab.methods.hdrcnn.HDRCNNMethod",
    experiment="experiments/hdrcnn.yaml",
    files=("official weights (hdrcnn_params.npz, TensorLayer save_npz)",),
    prefixes=("net.",),
    to_hdrlab=_HDRCNN_TO_HDRLAB.__getitem__,
    to_official=_HDRCNN_TO_OFFICIAL.__getitem__,
    tensor_to_hdrlab=_hdrcnn_tensor_to_hdrlab,
    tensor_to_official=_hdrcnn_tensor_to_official,
    reader=_read_hdrcnn,
)


# --------------------------------------------------------------------------- CF-Net
#: official ``CFNet`` (ytZhang99/CF-Net ``model.py``) -> :class:`~hdrlab.models.mergers.cfnet.CFNet`.
#: Every official block is ``Sequential(conv[, PReLU])`` (``.0`` conv / deconv, ``.1`` PReLU); the
#: over branch is ``*_over`` / ``srb_1`` / ``cfb_over<t>`` / ``out_1``, the under branch ``*_under`` /
#: ``srb_2`` / ``cfb_under<t>`` / ``out_2``. Official (``torch.save({"model": state_dict(), "loss": [...]})``)
#: names -> hdrlab names below ``merger.net.``
_CFNET_FEB = {"conv_in_over": "feb_over.0", "feat_in_over": "feb_over.1",
              "conv_in_under": "feb_under.0", "feat_in_under": "feb_under.1"}
_CFNET_BRANCH = {"srb_1": "srb_over", "srb_2": "srb_under", "cfb_over": "cfbs_over", "cfb_under": "cfbs_under"}
_CFNET_GROUPS = {"upBlocks": "up", "downBlocks": "down", "uptranBlocks": "lr_transitions",
                 "downtranBlocks": "hr_transitions"}
#: reconstruction heads: official (deconv, conv) name -> hdrlab ``rec_*`` list; ``out_1.j`` is step j + 1
_CFNET_REC = {"out_over": ("rec_over", 0, 0), "conv_out_over": ("rec_over", 0, 1),
              "out_under": ("rec_under", 0, 0), "conv_out_under": ("rec_under", 0, 1)}
_CFNET_REC_LISTS = {"out_1": ("rec_over", 0), "conv_out_1": ("rec_over", 1),
                    "out_2": ("rec_under", 0), "conv_out_2": ("rec_under", 1)}
_CFNET_BLOCK = re.compile(r"(?:(compress_in|compress_out|re_guide)|(upBlocks|downBlocks|uptranBlocks|downtranBlocks)"
                          r"\.(\d+))\.([01])\.(weight|bias)")
_CFNET_LAYER = re.compile(r"([01])\.(weight|bias)")
#: layers without a PReLU (``.1``): the under branch's first conv and the RGB output convs
_CFNET_NO_ACT = ("conv_in_under", "conv_out_over", "conv_out_under", "conv_out_1", "conv_out_2")


def _cfnet_layer(rest: str, key: str, *, activation: bool) -> str:
    """``0.weight`` / ``0.bias`` / ``1.weight`` (PReLU slope) checked; ``KeyError`` otherwise."""
    m = _CFNET_LAYER.fullmatch(rest)
    if m is None or (m[1] == "1" and (m[2] != "weight" or not activation)):
        raise KeyError(key)
    return rest


def _cfnet_to_hdrlab(key: str) -> str:
    """Official ``CFNet`` key -> ``CFNet`` key of hdrlab (``KeyError``: unknown)."""
    head, _, rest = key.partition(".")
    if head in _CFNET_FEB:
        return f"{_CFNET_FEB[head]}.{_cfnet_layer(rest, key, activation=head not in _CFNET_NO_ACT)}"
    if head in _CFNET_REC:
        net, index, part = _CFNET_REC[head]
        return f"{net}.{index}.{part}.{_cfnet_layer(rest, key, activation=head not in _CFNET_NO_ACT)}"
    if head in _CFNET_REC_LISTS:
        step, _, tail = rest.partition(".")
        net, part = _CFNET_REC_LISTS[head]
        if not step.isdigit():
            raise KeyError(key)
        return f"{net}.{int(step) + 1}.{part}.{_cfnet_layer(tail, key, activation=head not in _CFNET_NO_ACT)}"
    m = re.fullmatch(r"(srb_[12])|(cfb_over|cfb_under)(\d+)", head)
    block = _CFNET_BLOCK.fullmatch(rest)
    if m is None or block is None or (block[1] == "re_guide" and m[1]) or (block[4] == "1" and block[5] != "weight"):
        raise KeyError(key)
    prefix = _CFNET_BRANCH[m[1]] if m[1] else f"{_CFNET_BRANCH[m[2]]}.{int(m[3])}"
    if block[1] == "compress_in":
        return f"{prefix}.compress_in.{block[4]}.{block[5]}"
    if block[1]:
        return f"{prefix}.groups.{block[1]}.{block[4]}.{block[5]}"
    return f"{prefix}.groups.{_CFNET_GROUPS[block[2]]}.{block[3]}.{block[4]}.{block[5]}"


def _cfnet_to_official(key: str) -> str:
    parts = key.split(".")
    if parts[0] in ("feb_over", "feb_under"):
        return f"{ {v: k for k, v in _CFNET_FEB.items()}[f'{parts[0]}.{parts[1]}']}.{parts[2]}.{parts[3]}"
    if parts[0] in ("rec_over", "rec_under"):
        step, part, tail = int(parts[1]), int(parts[2]), ".".join(parts[3:])
        if step == 0:
            name = {(n, p): k for k, (n, _, p) in _CFNET_REC.items()}[(parts[0], part)]
            return f"{name}.{tail}"
        name = {v: k for k, v in _CFNET_REC_LISTS.items()}[(parts[0], part)]
        return f"{name}.{step - 1}.{tail}"
    if parts[0] in ("srb_over", "srb_under"):
        head, rest = {v: k for k, v in _CFNET_BRANCH.items()}[parts[0]], parts[1:]
    else:
        head, rest = f"{ {v: k for k, v in _CFNET_BRANCH.items()}[parts[0]]}{parts[1]}", parts[2:]
    if rest[0] == "compress_in":
        return f"{head}.{'.'.join(rest)}"
    rest = rest[1:]  # below "groups"
    if rest[0] in ("compress_out", "re_guide"):
        return f"{head}.{'.'.join(rest)}"
    return f"{head}.{ {v: k for k, v in _CFNET_GROUPS.items()}[rest[0]]}.{'.'.join(rest[1:])}"


def _cfnet_colour_axis(key: str, *, official: bool) -> int | None:
    """Colour axis of a tensor that reads or writes image channels (BGR officially), else ``None``."""
    if official:
        head = key.partition(".")[0]
        if head in ("conv_in_over", "conv_in_under") and key.endswith(".0.weight"):
            return 1
        if head.startswith("conv_out_"):
            return 0
        return None
    if re.fullmatch(r"feb_(over|under)\.0\.0\.weight", key):
        return 1
    return 0 if re.fullmatch(r"rec_(over|under)\.\d+\.1\.0\.(weight|bias)", key) else None


def _cfnet_tensor_to_hdrlab(key: str, tensor: torch.Tensor) -> torch.Tensor:
    axis = _cfnet_colour_axis(key, official=True)
    return tensor if axis is None else tensor.flip(axis)


def _cfnet_tensor_to_official(key: str, tensor: torch.Tensor) -> torch.Tensor:
    axis = _cfnet_colour_axis(key, official=False)
    return tensor if axis is None else tensor.flip(axis)


def read_cfnet_state(path: str | Path) -> State:
    """Read an official CF-Net ``.pth`` (``{"model": state_dict, "loss": [numpy floats]}``).

    Like :func:`read_official_state` (``weights_only=True``), with NumPy scalars and dtypes (the
    loss history) allowed as safe globals; no other code from the file runs.
    """
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.float64))]
    with torch.serialization.safe_globals(allowed):
        return read_official_state(path)


CFNET = OfficialFormat(
    name="cfnet",
    title="CF-Net",
    method_class="hdrlab.methods.cfnet.CFNetMethod",
    experiment="experiments/cfnet.yaml",
    files=("official model file (model/model_x2.pth or model/model_x4.pth; set scale to match)",),
    prefixes=("merger.net.",),
    to_hdrlab=_cfnet_to_hdrlab,
    to_official=_cfnet_to_official,
    # the official test feeds and writes OpenCV's BGR order, hdrlab RGB: the colour axis of both
    # FEB input convs and of every reconstruction output conv (weight and bias) is reversed
    tensor_to_hdrlab=_cfnet_tensor_to_hdrlab,
    tensor_to_official=_cfnet_tensor_to_official,
    reader=lambda path: read_cfnet_state(path),
)


# --------------------------------------------------------------------------- SingleHDR
#: official TensorFlow 1 graph (alex04072000/SingleHDR ``test_real_refinement.py``) ->
#: :class:`~hdrlab.models.direct.singlehdr.SingleHDRNet` (``net.`` of ``SingleHDRMethod``). Scopes of the
#: fine-tuned checkpoint ``ckpt_deq_lin_hal_ref/model.ckpt`` (``tf.train.Saver(tf.all_variables())``):
#:
#: * ``Dequantization_Net/conv2d[_n]/{kernel,bias}`` and ``Refinement_Net/...``: the 19 ``tf.layers.conv2d``
#:   of each U-Net in creation order (head 2, down blocks 2 x 4, up blocks 2 x 4, tail);
#: * ``crf_feature_net/{conv1,res<s><b>_branch<n>}/weights`` (+ ``conv1/biases``) and
#:   ``crf_feature_net/{bn_conv1,bn<s><b>_branch<n>}/BatchNorm/{beta,gamma,moving_mean,moving_variance}``
#:   (slim ResNet-50 trunk, no outer scope), ``ae_invcrf_decode_net/dense/{kernel,bias}``;
#: * ``Hallucination_Net/encoder/h<s>/conv_<k>/{W_conv2d,b_conv2d}`` (VGG16), ``encoder/h6/conv``,
#:   ``encoder/h6/batch_norm``, ``decoder/h<i>/decon2d`` (a 3x3 ``Conv2dLayer`` after nearest x2 and
#:   reflect padding, not a transposed conv), ``decoder/h<i>/decon2d/batch_norm_dc``,
#:   ``decoder/h<i>/fuse_skip_connection``, ``decoder/h7/{conv2d,batch_norm}`` (TensorLayer names);
#: * Adam slots ``<variable>/Adam``, ``<variable>/Adam_1`` and ``beta1_power``, ``beta2_power`` (dropped).
_SINGLEHDR_BN = (("beta", "bias"), ("gamma", "weight"), ("moving_mean", "running_mean"),
                 ("moving_variance", "running_var"))
_SINGLEHDR_UNET_CONVS = ("head1", "head2", *(f"down.{i}.conv{j}" for i in range(4) for j in (1, 2)),
                         *(f"up.{i}.conv{j}" for i in range(4) for j in (1, 2)), "tail")
#: torchvision ``vgg16().features`` index of each official VGG16 conv ``h<stage>/conv_<k>``
_SINGLEHDR_VGG = {(1, 1): 0, (1, 2): 2, (2, 1): 5, (2, 2): 7, (3, 1): 10, (3, 2): 12, (3, 3): 14,
                  (4, 1): 17, (4, 2): 19, (4, 3): 21, (5, 1): 24, (5, 2): 26, (5, 3): 28}
_SINGLEHDR_UNUSED = re.compile(r".+/Adam(_\d+)?|beta[12]_power(_\d+)?|global_step")


def _singlehdr_layout() -> tuple[tuple[str, str], ...]:
    """(official variable name, ``SingleHDRNet`` key) of every official network tensor."""
    pairs: list[tuple[str, str]] = []
    for scope, ours in (("Dequantization_Net", "dequantization.unet"), ("Refinement_Net", "refinement.unet")):
        for n, conv in enumerate(_SINGLEHDR_UNET_CONVS):
            name = f"{scope}/conv2d{f'_{n}' if n else ''}"
            pairs += [(f"{name}/kernel", f"{ours}.{conv}.weight"), (f"{name}/bias", f"{ours}.{conv}.bias")]

    def bn(official: str, ours: str) -> list[tuple[str, str]]:
        return [(f"{official}/{o}", f"{ours}.{h}") for o, h in _SINGLEHDR_BN]

    lin = "crf_feature_net"
    pairs += [(f"{lin}/conv1/weights", "linearization.conv1.weight"), (f"{lin}/conv1/biases", "linearization.conv1.bias")]
    pairs += bn(f"{lin}/bn_conv1/BatchNorm", "linearization.bn1")
    for stage, letters in (("2", "abc"), ("3", "ab")):
        for index, letter in enumerate(letters):
            ours = f"linearization.res{stage}.{index}"
            for branch, part in (("2a", "a"), ("2b", "b"), ("2c", "c")):
                pairs.append((f"{lin}/res{stage}{letter}_branch{branch}/weights", f"{ours}.conv_{part}.weight"))
                pairs += bn(f"{lin}/bn{stage}{letter}_branch{branch}/BatchNorm", f"{ours}.bn_{part}")
            if letter == "a":
                pairs.append((f"{lin}/res{stage}a_branch1/weights", f"{ours}.shortcut.0.weight"))
                pairs += bn(f"{lin}/bn{stage}a_branch1/BatchNorm", f"{ours}.shortcut.1")
    pairs += [("ae_invcrf_decode_net/dense/kernel", "linearization.fc.weight"),
              ("ae_invcrf_decode_net/dense/bias", "linearization.fc.bias")]

    def tl_conv(official: str, ours: str) -> list[tuple[str, str]]:
        return [(f"Hallucination_Net/{official}/W_conv2d", f"hallucination.{ours}.weight"),
                (f"Hallucination_Net/{official}/b_conv2d", f"hallucination.{ours}.bias")]

    for (stage, k), index in _SINGLEHDR_VGG.items():
        pairs += tl_conv(f"encoder/h{stage}/conv_{k}", f"encoder.{index}")
    pairs += tl_conv("encoder/h6/conv", "latent_conv") + bn("Hallucination_Net/encoder/h6/batch_norm",
                                                               "hallucination.latent_bn")
    for i in range(5):
        pairs += tl_conv(f"decoder/h{i + 1}/decon2d", f"ups.{i}.conv")
        pairs += bn(f"Hallucination_Net/decoder/h{i + 1}/decon2d/batch_norm_dc", f"hallucination.ups.{i}.bn")
        pairs += tl_conv(f"decoder/h{i + 2}/fuse_skip_connection", f"fuses.{i}")
    pairs += tl_conv("decoder/h7/conv2d", "head_conv") + bn("Hallucination_Net/decoder/h7/batch_norm",
                                                              "hallucination.head_bn")
    pairs += tl_conv("decoder/h7/fuse_skip_connection", "input_fuse")
    return tuple(pairs)


#: every official network tensor of the fine-tuned SingleHDR checkpoint: (TensorFlow name, ``SingleHDRNet`` key)
SINGLEHDR_LAYOUT: tuple[tuple[str, str], ...] = _singlehdr_layout()
_SINGLEHDR_TO_HDRLAB = dict(SINGLEHDR_LAYOUT)
_SINGLEHDR_TO_OFFICIAL = {ours: official for official, ours in SINGLEHDR_LAYOUT}


def _singlehdr_to_hdrlab(key: str) -> str | None:
    """Official variable -> ``SingleHDRNet`` key; Adam slots / ``beta*_power`` / ``global_step`` -> ``None``."""
    if key in _SINGLEHDR_TO_HDRLAB:
        return _SINGLEHDR_TO_HDRLAB[key]
    if _SINGLEHDR_UNUSED.fullmatch(key):
        return None
    raise KeyError(key)


def _singlehdr_tensor_to_hdrlab(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """TF conv kernels ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``; the dense kernel ``[in, out]`` -> ``[out, in]``."""
    if tensor.ndim == 4:
        return tensor.permute(3, 2, 0, 1).contiguous()
    if tensor.ndim == 2 and key.endswith("/kernel"):
        return tensor.t().contiguous()
    return tensor


def _singlehdr_tensor_to_official(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim == 4:
        return tensor.permute(2, 3, 1, 0).contiguous()
    if tensor.ndim == 2 and key.endswith(".weight"):
        return tensor.t().contiguous()
    return tensor


def _read_singlehdr(path: str | Path) -> State:
    """A TensorFlow checkpoint (its ``.index`` file or prefix) -> ``{variable name: tensor}``."""
    from hdrlab.tf_checkpoint import read_tf_checkpoint

    return read_tf_checkpoint(path)


SINGLEHDR = OfficialFormat(
    name="singlehdr",
    title="SingleHDR",
    method_class="hdrlab.methods.singlehdr.SingleHDRMethod",
    experiment="experiments/singlehdr.yaml",
    files=("fine-tuned TensorFlow checkpoint (ckpt_deq_lin_hal_ref/model.ckpt.index, .data-* beside it)",),
    prefixes=("net.",),
    to_hdrlab=_singlehdr_to_hdrlab,
    to_official=_SINGLEHDR_TO_OFFICIAL.__getitem__,
    tensor_to_hdrlab=_singlehdr_tensor_to_hdrlab,
    tensor_to_official=_singlehdr_tensor_to_official,
    reader=_read_singlehdr,
    # BatchNorm batch counters have no TensorFlow variable; the EMoR curves come from invemor.txt
    # (the method's emor_path), not from the checkpoint
    kept=("num_batches_tracked", "linearization.inv_mean", "linearization.inv_basis"),
)


# --------------------------------------------------------------------------- DuHDR
#: DuHDR's released TensorFlow 1 checkpoints (DoomsdayLeaf/DualHDR ``ckpt/``, names and shapes as
#: listed from their ``.index`` files) -> :class:`~hdrlab.models.direct.duhdr.DuHDRNet` (``net.`` of
#: ``DuHDRMethod``), whose Dnet and INnet carry SingleHDR's module names (:data:`SINGLEHDR_LAYOUT`):
#:
#: * ``ckpt_dnet/model.ckpt``: Dnet, ``Dequantization_Net/conv2d[_n]/{kernel,bias}`` (38 tensors);
#: * ``ckpt_inet/model.ckpt`` (the joint Dnet + INnet + Nnet training, Nnet built with
#:   ``share_params=True``): the 38 Dnet tensors, INnet's ``crf_feature_net/*`` (91) and
#:   ``ae_invcrf_decode_net/dense``, and Nnet, which *reuses* INnet's ``crf_feature_net`` trunk and adds
#:   ``fc11/{weights,biases}`` (slim ``fully_connected`` of the NHWC-flattened 26x26x512 average pool
#:   of a 256x256 input) and the root-scope ``dense/{kernel,bias}`` (``tf.layers.dense`` 11 -> 11);
#: * Adam slots and ``beta1_power`` / ``beta2_power`` of both files are dropped.
#:
#: Limitation: ITnet (``Hallucination_Net``), OOnet (``Refinement_Net``) and the learnable Q have no
#: released checkpoint in the repository (the full model is only on Baidu Pan) and are not mapped; an
#: import leaves them at their freshly built values.
_DUHDR_FC11_SIDE = 256 // 8 - 6
"""Side of the pooled map ``fc11`` flattens (official Nnet input 256x256: 26x26)."""
_DUHDR_NNET_HEAD = {"fc11/weights": "crf.fc.weight", "fc11/biases": "crf.fc.bias",
                    "dense/kernel": "crf.decode.weight", "dense/bias": "crf.decode.bias"}
_DUHDR_NNET_HEAD_OFFICIAL = {ours: official for official, ours in _DUHDR_NNET_HEAD.items()}
#: ``DuHDRNet`` keys of Nnet's trunk: filled from INnet's (shared) trunk, never written back
_DUHDR_SHARED_TRUNK = re.compile(r"crf\.(conv1|bn1|res2|res3)\..+")


def _duhdr_key_map(networks: tuple[str, ...]) -> KeyMap:
    """Official variable -> ``DuHDRNet`` key (below ``net.``) for a checkpoint holding ``networks``
    (``KeyError`` for any other variable); optimizer slots -> ``None``."""
    heads = tuple(f"{name}." for name in networks)

    def to_hdrlab(key: str) -> str | None:
        target = _DUHDR_NNET_HEAD.get(key) or _singlehdr_to_hdrlab(key)
        if target is not None and not target.startswith(heads):
            raise KeyError(key)
        return target

    return to_hdrlab


def _duhdr_to_official(key: str) -> str:
    """``DuHDRNet`` key (below ``net.``) -> official variable."""
    return _DUHDR_NNET_HEAD_OFFICIAL[key] if key in _DUHDR_NNET_HEAD_OFFICIAL else _SINGLEHDR_TO_OFFICIAL[key]


def _duhdr_fc11_split(rows: int, what: str) -> int:
    """Channels ``C`` of a ``fc11`` input of ``rows = 26 * 26 * C`` (``ConfigError`` otherwise)."""
    area = _DUHDR_FC11_SIDE * _DUHDR_FC11_SIDE
    if rows % area:
        raise ConfigError(f"DuHDR {what} has {rows} inputs, not {_DUHDR_FC11_SIDE}x{_DUHDR_FC11_SIDE}xC of the "
                          "official Nnet head; build DuHDRMethod with crf_input_size: 256")
    return rows // area


def _duhdr_tensor_to_hdrlab(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """SingleHDR's layout changes, plus ``fc11/weights`` ``[(h, w, c), out]`` (TF's NHWC flatten) ->
    ``[out, (c, h, w)]`` (PyTorch's NCHW flatten)."""
    if key == "fc11/weights" and tensor.ndim == 2:
        rows, out = tensor.shape
        side = _DUHDR_FC11_SIDE
        channels = _duhdr_fc11_split(rows, "fc11/weights")
        return tensor.reshape(side, side, channels, out).permute(3, 2, 0, 1).reshape(out, rows).contiguous()
    return _singlehdr_tensor_to_hdrlab(key, tensor)


def _duhdr_tensor_to_official(key: str, tensor: torch.Tensor) -> torch.Tensor:
    if key == "crf.fc.weight":
        out, rows = tensor.shape
        side = _DUHDR_FC11_SIDE
        channels = _duhdr_fc11_split(rows, "crf.fc.weight")
        return tensor.reshape(out, channels, side, side).permute(2, 3, 1, 0).reshape(rows, out).contiguous()
    return _singlehdr_tensor_to_official(key, tensor)


@dataclass(frozen=True)
class _DuHDRFormat(OfficialFormat):
    """:class:`OfficialFormat` of one DuHDR checkpoint that fills several ``DuHDRNet`` networks.

    :attr:`prefixes` are the networks the file fills (``net.dequantization.`` ...: what
    :func:`check_against` requires complete and :meth:`inverse` writes); the key maps work below
    ``net.``. With :attr:`shared_trunk`, INnet's ``crf_feature_net`` tensors also fill Nnet's trunk
    (``net.crf.{conv1,bn1,res2,res3}``), as the official Nnet reuses INnet's variables; hdrlab's Nnet
    has a trunk of its own, so :meth:`inverse` writes INnet's trunk only (an hdrlab Nnet trunk trained
    apart from INnet's has no place in the official file and is not written).
    """

    shared_trunk: bool = False

    def _below_net(self) -> OfficialFormat:
        """The same mapping as a plain one-file format under ``net.``."""
        import dataclasses

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(OfficialFormat)}
        return OfficialFormat(**{**values, "prefixes": ("net.",)})

    def _shared(self, key: str) -> bool:
        return self.shared_trunk and _DUHDR_SHARED_TRUNK.fullmatch(key.removeprefix("net.")) is not None

    def convert(self, states: Sequence[Mapping[str, torch.Tensor]]) -> State:
        out = self._below_net().convert(states)
        if self.shared_trunk:
            lin = "net.linearization."
            out.update({f"net.crf.{k[len(lin):]}": v.clone() for k, v in list(out.items())
                        if k.startswith(lin) and self._shared(f"net.crf.{k[len(lin):]}")})
        return out

    def inverse(self, state: Mapping[str, torch.Tensor]) -> list[State]:
        return self._below_net().inverse({k: v for k, v in state.items()
                                          if k.startswith(self.prefixes) and not self._shared(k)})

    def official_name(self, hdrlab_key: str) -> str:
        if self._shared(hdrlab_key):
            hdrlab_key = "net.linearization." + hdrlab_key[len("net.crf."):]
        return self._below_net().official_name(hdrlab_key)


#: BatchNorm batch counters have no TensorFlow variable; the EMoR curves of INnet and Nnet come
#: from ``emor_path`` (invemor.txt / emor.txt), not from the checkpoints
_DUHDR_KEPT = ("num_batches_tracked", "linearization.inv_mean", "linearization.inv_basis", "crf.mean", "crf.basis")

DUHDR = _DuHDRFormat(
    name="duhdr",
    title="DuHDR",
    method_class="hdrlab.methods.duhdr.DuHDRMethod",
    experiment="experiments/duhdr.yaml",
    files=("joint Dnet+INnet+Nnet TensorFlow checkpoint (ckpt/ckpt_inet/model.ckpt.index, .data-* beside it; "
           "Nnet's fc11 needs --config experiments/duhdr.yaml --config experiments/overrides/duhdr_official_crf.yaml)",),
    prefixes=("net.dequantization.", "net.linearization.", "net.crf."),
    to_hdrlab=_duhdr_key_map(("dequantization", "linearization", "crf")),
    to_official=_duhdr_to_official,
    tensor_to_hdrlab=_duhdr_tensor_to_hdrlab,
    tensor_to_official=_duhdr_tensor_to_official,
    reader=_read_singlehdr,
    kept=_DUHDR_KEPT,
    shared_trunk=True,
)

DUHDR_DNET = _DuHDRFormat(
    name="duhdr_dnet",
    title="DuHDR Dnet",
    method_class="hdrlab.methods.duhdr.DuHDRMethod",
    experiment="experiments/duhdr.yaml",
    files=("Dnet TensorFlow checkpoint (ckpt/ckpt_dnet/model.ckpt.index, .data-* beside it)",),
    prefixes=("net.dequantization.",),
    to_hdrlab=_duhdr_key_map(("dequantization",)),
    to_official=_duhdr_to_official,
    tensor_to_hdrlab=_duhdr_tensor_to_hdrlab,
    tensor_to_official=_duhdr_tensor_to_official,
    reader=_read_singlehdr,
    kept=_DUHDR_KEPT,
)


# --------------------------------------------------------------------------- ExpandNet
#: official ``ExpandNet`` (dmarnerides/hdr-expandnet ``model.py``) keys; hdrlab keeps its module names
_EXPANDNET_KEY = re.compile(r"(local_net|mid_net|glob_net|end_net)\.\d+(\.0)?\.(weight|bias)")


def _expandnet_key(key: str) -> str:
    """Official ``ExpandNet`` key -> the same key of :class:`hdrlab.models.direct.ExpandNet` (``KeyError``: unknown)."""
    if not _EXPANDNET_KEY.fullmatch(key):
        raise KeyError(key)
    return key


EXPANDNET = OfficialFormat(
    name="expandnet",
    title="ExpandNet",
    method_class="hdrlab.methods.expandnet.ExpandNetMethod",
    experiment="experiments/expandnet.yaml",
    files=("model state dict (weights.pth)",),
    prefixes=("net.",),
    to_hdrlab=_expandnet_key,
    to_official=_expandnet_key,
)

#: the official formats by ``hdrlab import-weights`` method name
FORMATS: dict[str, OfficialFormat] = {fmt.name: fmt for fmt in (CEVR, DEEP_RECURSIVE, KIM2021, DRTMO, LE2023, AHDRNET, HDRCNN, CFNET, SINGLEHDR, DUHDR, DUHDR_DNET, EXPANDNET)}


def official_format(name: str) -> OfficialFormat:
    """The :class:`OfficialFormat` called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in FORMATS:
        raise ConfigError(f"no official weights format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]
