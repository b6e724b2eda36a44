"""``benchmarks/singlehdr_deep_path_share.py``: the deep-path share quoted in docs/methods.md."""

from __future__ import annotations

import math

import pytest
import torch

from hdrlab.models.direct.singlehdr import SingleHDRNet
from tests.support.benchmarks import benchmark_module


@pytest.fixture(scope="module")
def batches():
    return benchmark_module("singlehdr_deep_path_share").test_batches(scene_size=64, scenes=2)


def test_share_is_zero_without_the_deep_path_and_one_without_the_input(batches):
    ds = benchmark_module("singlehdr_deep_path_share")
    torch.manual_seed(0)
    net = SingleHDRNet(width=0.125)
    assert any(b["ldr"].amax(1).gt(0.88).any() for b in batches)  # the scenes have a mask to score
    share = ds.deep_path_share(net, batches)
    assert 0.0 < share < 1.0
    with torch.no_grad():  # y can never be positive: the residual is a fixed function of B
        net.hallucination.head_bn.bias.fill_(-1e6)
    assert ds.deep_path_share(net, batches) == 0.0
    torch.manual_seed(0)
    net = SingleHDRNet(width=0.125)
    with torch.no_grad():  # the fuse ignores B: all of the residual comes through y
        net.hallucination.input_fuse.weight[:, 3:].zero_()
        net.hallucination.input_fuse.bias.zero_()
    assert math.isclose(ds.deep_path_share(net, batches), 1.0, abs_tol=1e-6)


def test_checkpoint_round_trip_and_missing_file(tmp_path, capsys):
    ds = benchmark_module("singlehdr_deep_path_share")
    torch.manual_seed(1)
    net = SingleHDRNet(width=0.125)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = ds.load_net(path, width=0.125)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(SystemExit):
        ds.main([str(tmp_path / "missing.ckpt")])
    assert "missing.ckpt does not exist" in capsys.readouterr().err
