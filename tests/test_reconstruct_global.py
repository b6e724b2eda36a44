"""Tiled reconstruction shares image-wide branches: SingleHDR's inverse CRF is estimated once on a
downsampled full image and given to every tile (tiled inference under a memory budget)."""

from __future__ import annotations

import torch

from hdrlab.camera import CRF
from hdrlab.commands.reconstruct import reconstruct_image
from hdrlab.methods.singlehdr import SingleHDRMethod


def _method() -> SingleHDRMethod:
    torch.manual_seed(0)
    return SingleHDRMethod(width=0.125, pretrained_trunks=False).eval()


def _photo(h: int = 192, w: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    hdr = torch.rand(3, h, w, generator=g) * torch.linspace(0.1, 3.0, w)
    return CRF.gamma(2.2)(hdr.clamp(0, 1))


def test_global_branch_equals_the_built_in_estimate():
    method = _method()
    ldr = _photo()[None]
    batch = {"ldr": ldr}
    with torch.no_grad():
        shared = method.predict_tile(batch, method.global_branch(ldr))
        own = method.predict_image(batch)
    assert torch.equal(shared, own)


def test_tiles_share_one_inverse_crf(monkeypatch):
    method = _method()
    calls, contexts = [], []
    branch, tile_fn = method.global_branch, method.predict_tile
    monkeypatch.setattr(method, "global_branch", lambda x: calls.append(tuple(x.shape)) or branch(x))
    monkeypatch.setattr(method, "predict_tile", lambda b, c: contexts.append(c) or tile_fn(b, c))
    ldr = _photo()
    tiled = reconstruct_image(method, ldr, tile=128, overlap=32, multiple=64)
    whole = reconstruct_image(method, ldr, tile=4096)
    assert len(calls) == 1 and len(contexts) >= 1 + 4  # >= 4 tiles, then one untiled call
    tiles = contexts[:-1]
    assert all(c is tiles[0] for c in tiles) and contexts[-1] is None
    assert tiled.shape == whole.shape == ldr.shape and torch.isfinite(tiled).all()
    diff = (tiled - whole).abs().max().item()
    print(f"\nSingleHDR width 1/8 (random init), {len(tiles)} tiles vs untiled: max abs difference {diff:.3e}")
