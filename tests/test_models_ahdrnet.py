"""AHDRNet (Yan et al. CVPR 2019): architecture facts, official state-dict conversion, loss, merger contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from hdrlab.errors import ConfigError
from hdrlab.losses.ahdrnet import ahdrnet_loss
from hdrlab.models.mergers.ahdrnet import (
    AHDRNET_OFFICIAL_UNUSED,
    AHDRNetMerger,
)
from hdrlab.models.mergers.base import StackMerger
from hdrlab.models.mergers.triplet import gamma_inputs
from hdrlab.stack import ExposureStack
from hdrlab.weights_import import official_format

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 1 / 8
EV = torch.tensor([[-2.0, 0.0, 2.0]])


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official ``AHDR`` state dict (``model.py``; nChannel 6, nFeat 64,
    growthRate 32, nDenselayer 6), written out from its layer definitions."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int = 3) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    conv("conv1", 6, 64)
    conv("conv2", 192, 64)
    conv("att11", 128, 128)
    conv("att12", 128, 64)
    conv("attConv1", 64, 64)
    conv("att31", 128, 128)
    conv("att32", 128, 64)
    conv("attConv3", 64, 64)
    for k in (1, 2, 3):
        for i in range(6):
            conv(f"RDB{k}.dense_layers.{i}.conv", 64 + 32 * i, 32)
        conv(f"RDB{k}.conv_1x1", 256, 64, k=1)
    conv("GFF_1x1", 192, 64, k=1)
    conv("GFF_3x3", 64, 64)
    conv("conv_up", 64, 64)
    conv("conv3", 64, 3)
    return shapes


def official_forward(sd: dict[str, torch.Tensor], x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
    """``AHDR.forward`` re-derived functionally from the official key names (reference for the conversion)."""

    def conv(name: str, x: torch.Tensor, **kw) -> torch.Tensor:
        return F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)

    def lrelu(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.01)

    f1, f2, f3 = (lrelu(conv("conv1", x, padding=1)) for x in (x1, x2, x3))
    f1 = f1 * torch.sigmoid(conv("att12", lrelu(conv("att11", torch.cat([f1, f2], 1), padding=1)), padding=1))
    f3 = f3 * torch.sigmoid(conv("att32", lrelu(conv("att31", torch.cat([f3, f2], 1), padding=1)), padding=1))
    f = conv("conv2", torch.cat([f1, f2, f3], 1), padding=1)
    outs = []
    for k in (1, 2, 3):
        y = f
        for i in range(6):
            y = torch.cat([y, F.relu(conv(f"RDB{k}.dense_layers.{i}.conv", y, padding=2, dilation=2))], 1)
        f = conv(f"RDB{k}.conv_1x1", y) + f
        outs.append(f)
    f = conv("GFF_3x3", conv("GFF_1x1", torch.cat(outs, 1)), padding=1) + f2
    return torch.sigmoid(conv("conv3", conv("conv_up", f, padding=1), padding=1))


# ---------------------------------------------------------------- architecture


def test_parameter_count_width1_built_and_official_total() -> None:
    with FakeTensorMode():
        merger = AHDRNetMerger()
        built = _count(merger)
    assert built == 1_441_283
    official = official_shapes()
    total = sum(math.prod(s) for s in official.values())
    unused = sum(math.prod(s) for k, s in official.items() if k.split(".")[0] in AHDRNET_OFFICIAL_UNUSED)
    assert total == 1_515_139 and unused == 73_856 == 2 * 36_928
    assert built == total - unused


def test_layer_geometry_official() -> None:
    merger = AHDRNetMerger()
    assert len(merger.drdbs) == 3
    for block in merger.drdbs:
        assert [c.in_channels for c in block.dense] == [64, 96, 128, 160, 192, 224]
        assert all(c.out_channels == 32 and c.dilation == (2, 2) and c.padding == (2, 2) for c in block.dense)
        assert (block.fuse.in_channels, block.fuse.out_channels, block.fuse.kernel_size) == (256, 64, (1, 1))
    assert merger.act.negative_slope == 0.01 and merger.attend_low.act.negative_slope == 0.01
    assert merger.stride == 1 and merger.preserves_size and merger.output_domain == "linear"


def test_kaiming_normal_init() -> None:
    torch.manual_seed(0)
    merger = AHDRNetMerger()
    w = merger.merge_in.weight.detach()  # 64 x 192 x 3 x 3: 110,592 values, fan_in 1728
    assert abs(float(w.std()) / math.sqrt(2.0 / 1728) - 1.0) < 0.02
    assert abs(float(w.mean())) < 1e-3
    # biases keep PyTorch's default uniform(+-1/sqrt(fan_in))
    assert float(merger.merge_in.bias.detach().abs().max()) <= 1 / math.sqrt(1728)


# ---------------------------------------------------------------- official weights


def convert_official_state_dict(state: dict) -> dict:
    """The ``ahdrnet`` official format (``hdrlab import-weights ahdrnet``), below the method's ``merger.``."""
    return {k.removeprefix("merger."): v for k, v in official_format("ahdrnet").convert([state]).items()}


def test_convert_official_state_dict_loads_strict_and_matches_official_forward() -> None:
    g = torch.Generator().manual_seed(0)
    official = {k: 0.05 * torch.randn(s, generator=g) for k, s in official_shapes().items()}
    converted = convert_official_state_dict(official)
    # and back: every tensor the hdrlab network holds returns under its official name
    back = official_format("ahdrnet").inverse({f"merger.{k}": v for k, v in converted.items()})[0]
    assert back == {k: v for k, v in official.items() if not k.startswith(AHDRNET_OFFICIAL_UNUSED)}
    assert len(converted) == len(official) - 4  # attConv1/attConv3 weight + bias dropped
    assert not any(k.startswith(AHDRNET_OFFICIAL_UNUSED) for k in converted)
    merger = AHDRNetMerger().eval()
    merger.load_state_dict(converted, strict=True)
    assert converted["drdbs.1.dense.5.weight"] is official["RDB2.dense_layers.5.conv.weight"]

    images = torch.rand(1, 3, 3, 12, 14, generator=g)
    stack = ExposureStack(images=images, ev=EV, reference=1)
    ldr, hdr = gamma_inputs(stack)
    x1, x2, x3 = (torch.cat([ldr[:, i], hdr[:, i]], dim=1) for i in range(3))
    with torch.no_grad():
        reference = official_forward(official, x1, x2, x3)
        ours = merger.forward_inputs(x1, x2, x3)
        merged = merger(stack)
    assert 0.05 < float(reference.min()) and float(reference.max()) < 0.95  # not saturated: a real comparison
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    # merge(): the official (darkest-relative) output rescaled to the reference exposure, x 2 ** 2
    torch.testing.assert_close(merged, 4.0 * reference, atol=1e-5, rtol=1e-5)


def test_convert_official_state_dict_rejects_foreign_keys() -> None:
    with pytest.raises(ConfigError, match="holds 'module.conv1.weight', which the AHDRNet network has no"):
        convert_official_state_dict({"module.conv1.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="RDB4"):
        convert_official_state_dict({"RDB4.conv_1x1.weight": torch.zeros(1)})


# ---------------------------------------------------------------- loss


def test_loss_closed_form_official_mu_law() -> None:
    pred, target = torch.full((2, 3, 4, 4), 0.25), torch.full((2, 3, 4, 4), 0.01)
    expected = (math.log(1 + 5000 * 0.25) - math.log(1 + 5000 * 0.01)) / math.log(5001)
    assert float(ahdrnet_loss(pred, target)) == pytest.approx(expected, rel=1e-6)
    merger = AHDRNetMerger(width=WIDTH)
    value, terms = merger.loss(pred, target)
    assert float(value) == pytest.approx(expected, rel=1e-6) and set(terms) == {"mu_l1"}
    # the official expression on random tensors: log(1 + 5000 x) / log(5001), mean absolute difference
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    official = (torch.log(1 + 5000 * a) / math.log(5001) - torch.log(1 + 5000 * b) / math.log(5001)).abs().mean()
    torch.testing.assert_close(ahdrnet_loss(a, b), official)


# ---------------------------------------------------------------- merger contract, errors


def test_merger_output_range_and_odd_size() -> None:
    torch.manual_seed(0)
    merger = AHDRNetMerger(width=WIDTH).eval()
    assert isinstance(merger, StackMerger) and merger.accepts.exactly == 3
    stack = ExposureStack(images=torch.rand(2, 3, 3, 17, 23), ev=EV.repeat(2, 1), reference=1)
    with torch.no_grad():
        out = merger(stack)
        attention = merger.attend_low.attention_map(torch.rand(2, 8, 5, 5), torch.rand(2, 8, 5, 5))
    assert out.shape == (2, 3, 17, 23) and torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 4.0  # sigmoid x 2 ** (0 - (-2))
    assert float(attention.min()) > 0.0 and float(attention.max()) < 1.0


def test_bad_inputs_raise_config_errors() -> None:
    merger = AHDRNetMerger(width=WIDTH)
    with pytest.raises(ConfigError, match="width=0"):
        AHDRNetMerger(width=0)
    with pytest.raises(ConfigError, match="select_ev"):
        AHDRNetMerger(width=WIDTH, select_ev=(-2.0, 2.0))
    with pytest.raises(ConfigError, match="exactly 3 exposures"):
        merger(ExposureStack(images=torch.rand(1, 2, 3, 8, 8), ev=torch.tensor([[-2.0, 0.0]]), reference=1))
    with pytest.raises(ConfigError, match="reference exposure in the middle"):
        merger(ExposureStack(images=torch.rand(1, 3, 3, 8, 8), ev=EV, reference=0))
    with pytest.raises(ConfigError, match=r"\[B, 3, 3, H, W\]"):
        merger.forward_net(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 3, 8, 8))
    with pytest.raises(ConfigError, match="differ in shape"):
        ahdrnet_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 6, 8))
    stack = ExposureStack(images=torch.rand(1, 3, 3, 8, 8), ev=EV, reference=1)
    with pytest.raises(ConfigError, match=r"batch\['hdr'\]"):
        merger.objective(stack, {})
