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
            hdrlab network does not hold, dropped); raises ``KeyError`` for an unknown key.
        to_official: hdrlab key below the prefix -> official key (the inverse of ``to_hdrlab``).
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
    to_hdrlab: KeyMap
    to_official: Callable[[str], str]
    tensor_to_hdrlab: Callable[[str, torch.Tensor], torch.Tensor] = _identity_tensor
    tensor_to_official: Callable[[str, torch.Tensor], torch.Tensor] = _identity_tensor
    reader: Callable[[Path], State] = field(default=lambda path: read_official_state(path))
    #: hdrlab key endings that a method may leave out depending on its options (e.g. BatchNorm
    #: running statistics under ``track_running_stats=False``): dropped when the target lacks them
    optional: tuple[str, ...] = ()

    def _hdrlab_key(self, key: str, index: int) -> str | None:
        try:
            return self.to_hdrlab(key)
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
                    out[index][self.to_official(rel)] = self.tensor_to_official(rel, tensor)
                    break
        return out

    def official_name(self, hdrlab_key: str) -> str:
        """``"<file>: <official key>"`` of an hdrlab key (for messages)."""
        for index, prefix in enumerate(self.prefixes):
            if hdrlab_key.startswith(prefix):
                return f"{self.files[index]}: {self.to_official(hdrlab_key[len(prefix):])!r}"
        return repr(hdrlab_key)


def check_against(fmt: OfficialFormat, converted: Mapping[str, torch.Tensor],
                  target: Mapping[str, torch.Tensor], *, hint: str = "") -> State:
    """Check converted tensors against the state dict of the hdrlab method they go into.

    Every converted key must exist in ``target`` with the same shape (keys ending in one of
    ``fmt.optional`` that ``target`` lacks are dropped), and every ``target`` key under the
    format's prefixes must be converted.

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
        if key.startswith(fmt.prefixes) and key not in converted:
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
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        except (OSError, ValueError) as err:
            raise HDRIOError(f"{path} is not a readable NumPy .npz file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HDRIOError(f"{path} is not a PyTorch weights file readable without running its code ({first[:200]}); "
                         "save its state_dict() with torch.save and give that file") from err
    return _flat_tensors(obj, path)


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

#: the official formats by ``hdrlab import-weights`` method name
FORMATS: dict[str, OfficialFormat] = {fmt.name: fmt for fmt in (CEVR, DEEP_RECURSIVE)}


def official_format(name: str) -> OfficialFormat:
    """The :class:`OfficialFormat` called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in FORMATS:
        raise ConfigError(f"no official weights format {name!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[name]
