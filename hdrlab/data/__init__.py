"""hdrlab.data: procedural scenes, folder and public-dataset readers, pair synthesis, DataModules.

Names are re-exported lazily (PEP 562), so ``import hdrlab.data`` stays cheap and does not
import Lightning until a DataModule is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "HDRBatch": "hdrlab.data.batch",
    "PairSynthesizer": "hdrlab.data.synthesis",
    "sample_generator": "hdrlab.data.synthesis",
    "sample_seed": "hdrlab.data.synthesis",
    "ProceduralHDRDataset": "hdrlab.data.datasets",
    "HDRFolderDataset": "hdrlab.data.datasets",
    "UnpairedLDRFolder": "hdrlab.data.datasets",
    "UnpairedLDRDataModule": "hdrlab.data.unpaired",
    "HDRSynthRealDataset": "hdrlab.data.public",
    "HDREyeDataset": "hdrlab.data.public",
    "DrTMOBracketDataset": "hdrlab.data.public",
    "SICEDataset": "hdrlab.data.public",
    "KalantariDataset": "hdrlab.data.public",
    "ProceduralDataModule": "hdrlab.data.datamodules",
    "HDRFolderDataModule": "hdrlab.data.datamodules",
    "EpochSampler": "hdrlab.data.datamodules",
    "collate_hdr_batch": "hdrlab.data.datamodules",
    "KalantariDataModule": "hdrlab.data.brackets",
    "SICEDataModule": "hdrlab.data.brackets",
    "BracketSceneDataset": "hdrlab.data.brackets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdrlab.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
