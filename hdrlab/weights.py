"""Optional pretrained trunk files: where they go, sha256 check, loading with a clear error.

hdrlab never downloads anything. Perceptual losses (VGG16/VGG19 features) and LPIPS (AlexNet)
need the official torchvision ImageNet files, placed unrenamed in the torch hub cache folder
``Path(torch.hub.get_dir()) / "checkpoints"`` (``$TORCH_HOME/hub/checkpoints`` by default).

torchvision names each file ``<arch>-<first 8 hex digits of its sha256>.pth`` but only checks
the hash at download time; a cached file is trusted blindly (a random file with the right name
loads). :func:`check_weights` and :func:`require_weights` therefore recompute the sha256 and
compare it with the prefix in the file name.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hdrlab.errors import ConfigError, WeightsMissingError

__all__ = [
    "KNOWN_WEIGHTS",
    "KnownWeights",
    "WeightStatus",
    "check_weights",
    "file_matches_hash_prefix",
    "hash_prefix",
    "load_vgg_features",
    "require_weights",
    "sha256_file",
    "weights_dir",
]


@dataclass(frozen=True)
class KnownWeights:
    """One optional pretrained file.

    Attributes:
        name: short key (``"vgg16"``, ``"vgg19"``, ``"alexnet"``).
        filename: the official torchvision file name (sha256 prefix inside).
        purpose: what hdrlab uses it for.
        url: where the file comes from (shown to the user, never fetched).
    """

    name: str
    filename: str
    purpose: str
    url: str


#: The optional files hdrlab knows, by short name.
KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "vgg16": KnownWeights(
        "vgg16",
        "vgg16-397923af.pth",
        "VGG16 IMAGENET1K_V1: perceptual (VGG) losses",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
    ),
    "vgg16_bn": KnownWeights(
        "vgg16_bn",
        "vgg16_bn-6c64b313.pth",
        "VGG16-BN IMAGENET1K_V1: CEVR encoder",
        "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
    ),
    "vgg19": KnownWeights(
        "vgg19",
        "vgg19-dcbb9e9d.pth",
        "VGG19 IMAGENET1K_V1: perceptual (VGG19) losses",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    ),
    "alexnet": KnownWeights(
        "alexnet",
        "alexnet-owt-7be5be79.pth",
        "AlexNet IMAGENET1K_V1: LPIPS (alex) metric",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    ),
    "squeezenet1_1": KnownWeights(
        "squeezenet1_1",
        "squeezenet1_1-b8a52dc0.pth",
        "SqueezeNet 1.1 IMAGENET1K_V1: LPIPS (squeeze) metric",
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    ),
}

_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class WeightStatus:
    """Result of checking one known file.

    Attributes:
        name: short key (``"vgg16"``...).
        filename: expected file name.
        purpose: what it is used for.
        path: where it must be.
        present: the file exists.
        sha256_ok: the file's sha256 starts with the prefix in its name (``False`` when missing).
    """

    name: str
    filename: str
    purpose: str
    path: Path
    present: bool
    sha256_ok: bool

    def to_json(self) -> dict[str, object]:
        """JSON-serialisable dict (path as string)."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def weights_dir() -> Path:
    """The folder the files must be in: ``Path(torch.hub.get_dir()) / "checkpoints"``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_prefix(filename: str) -> str | None:
    """The hex sha256 prefix torchvision puts in a file name (``"vgg16-397923af.pth"`` -> ``"397923af"``).

    Returns:
        The lower-case hex prefix (8..64 digits), or ``None`` when the name carries none.
    """
    match = _HASH_IN_NAME.search(Path(filename).name)
    return match.group(1) if match else None


def sha256_file(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks; memoised on (path, size, mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(chunk_size):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def file_matches_hash_prefix(path: str | os.PathLike) -> bool:
    """Whether ``sha256(file)`` starts with the hash prefix in the file's name (``False`` if none)."""
    prefix = hash_prefix(Path(path).name)
    return prefix is not None and sha256_file(path).startswith(prefix)


def _known(name: str) -> KnownWeights:
    for entry in KNOWN_WEIGHTS.values():
        if name in (entry.name, entry.filename):
            return entry
    raise ConfigError(
        f"unknown pretrained file {name!r}; known: {', '.join(KNOWN_WEIGHTS)} "
        f"({', '.join(e.filename for e in KNOWN_WEIGHTS.values())})."
    )


def check_weights() -> list[WeightStatus]:
    """Status of every known file in :func:`weights_dir` (hashes every present file)."""
    folder = weights_dir()
    out = []
    for entry in KNOWN_WEIGHTS.values():
        path = folder / entry.filename
        present = path.is_file()
        ok = present and file_matches_hash_prefix(path)
        out.append(WeightStatus(entry.name, entry.filename, entry.purpose, path, present, ok))
    return out


def require_weights(name: str) -> Path:
    """Path of a known file after checking that it is present and matches its sha256 prefix.

    Args:
        name: short key (``"vgg16"``, ``"vgg19"``, ``"alexnet"``) or the file name.

    Raises:
        WeightsMissingError: the file is missing or its hash does not match; the message names
            the file, the folder and how to fix it (nothing is downloaded).
        ConfigError: ``name`` is not a known file.
    """
    entry = _known(name)
    folder = weights_dir()
    path = folder / entry.filename
    if not path.is_file():
        raise WeightsMissingError(
            f"pretrained file {entry.filename} ({entry.purpose}) is missing from {folder}. "
            f"Copy the official torchvision file there unrenamed (it is {entry.url}; fetch it on a machine "
            "with internet access), or point TORCH_HOME at a folder whose hub/checkpoints holds it. "
            "hdrlab never downloads; run 'hdrlab weights check' to verify."
        )
    if not file_matches_hash_prefix(path):
        got = sha256_file(path)[:8]
        raise WeightsMissingError(
            f"{path} does not match the sha256 prefix in its name ({hash_prefix(entry.filename)}, "
            f"file hashes to {got}...): it is corrupt, truncated or not the official file. "
            f"Replace it with the official {entry.url} in {folder}."
        )
    return path


def _vgg_trunk(kind: str) -> nn.Sequential:
    """The torchvision VGG ``features`` layout, built without the 102 M-parameter classifier.

    Same modules and state-dict keys as ``torchvision.models.<kind>(weights=None).features``
    (``torchvision.models.vgg.make_layers`` with config ``D``/``E``), with torchvision's VGG
    initialisation (Kaiming-normal ``fan_out``/ReLU conv weights, zero biases). Skipping the
    classifier makes construction ~30x faster on CPU.
    """
    from torchvision.models import vgg as tv_vgg

    cfg = {"vgg16": "D", "vgg19": "E"}
    if kind not in cfg:
        raise ConfigError(f"unknown VGG kind {kind!r}; use 'vgg16' or 'vgg19'.")
    features = tv_vgg.make_layers(tv_vgg.cfgs[cfg[kind]], batch_norm=False)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def load_vgg_features(kind: str = "vgg16", *, pretrained: bool = True) -> nn.Sequential:
    """The torchvision VGG convolutional trunk (``model.features``) for perceptual losses.

    Builds the ``features`` part of ``torchvision.models.vgg16/vgg19`` and, when ``pretrained``,
    loads the ``features.*`` tensors of the checked ImageNet file (:func:`require_weights`) with
    ``torch.load(..., weights_only=True)`` (strict: every trunk tensor must be present); the
    classifier is not used by perceptual losses and is discarded. ``pretrained=False``
    returns the randomly initialised trunk (tests, tiny configs). Input: ``[B, 3, H, W]``
    ImageNet-normalised RGB.

    Args:
        kind: ``"vgg16"`` or ``"vgg19"``.
        pretrained: load the ImageNet weights.

    Returns:
        The ``features`` ``nn.Sequential`` (in eval mode when pretrained).

    Raises:
        ConfigError: unknown ``kind``.
        WeightsMissingError: ``pretrained`` and the file is missing, corrupt or not a VGG state dict.
    """
    features = _vgg_trunk(kind)
    if not pretrained:
        return features
    path = require_weights(kind)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of a damaged file
        raise WeightsMissingError(f"{path} could not be loaded ({err}); replace it with the official file.") from err
    trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    try:
        features.load_state_dict(trunk, strict=True)
    except RuntimeError as err:
        raise WeightsMissingError(
            f"{path} does not hold a torchvision {kind} state dict ({err}); replace it with the official file."
        ) from err
    return features.eval()
