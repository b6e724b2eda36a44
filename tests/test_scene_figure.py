"""Per-scene comparison figures (:mod:`hdrlab.report.scene_figure`): layout, zoom box, colour bars,
and drawing them from runs' ``test_outputs/``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hdrlab.report.scene_figure as sf
from hdrlab.callbacks.per_sample_metrics import save_sample_outputs
from hdrlab.errors import ConfigError
from hdrlab.report.scene_figure import (
    ERROR_LABEL,
    LOG_LUMINANCE_LABEL,
    scene_figure,
    scene_figures_from_runs,
    zoom_box,
)

H, W = 40, 56


def _scene(seed: int = 0, *, big: tuple[int, int, int, int] = (4, 30, 16, 22), small: int = 3):
    """Reference radiance with a big bright block (top, left, height, width) and a small one; the LDR
    input clips both (values >= 1 map to code 255)."""
    g = torch.Generator().manual_seed(seed)
    ref = 0.05 + 0.4 * torch.rand(3, H, W, generator=g)
    top, left, h, w = big
    ref[:, top:top + h, left:left + w] = 8.0
    ref[:, 30:30 + small, 5:5 + small] = 4.0
    ldr = (torch.round(ref.clamp(0, 1) ** (1 / 2.2) * 255) / 255).clamp(0, 1)
    return ldr, ref


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figure each scene_figure call saves (read before it is closed)."""
    figures = []
    original = sf.save_figure

    def spy(fig, path, title, **kw):
        figures.append({
            "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
            "titles": [ax.get_title() for ax in fig.axes],
            "ylabels": [ax.get_ylabel() for ax in fig.axes],
            "images": sum(1 for ax in fig.axes if ax.images),
            "axes": len(fig.axes),
        })
        return original(fig, path, title, **kw)

    monkeypatch.setattr(sf, "save_figure", spy)
    return figures


def test_scene_figure_layout_zoom_and_colour_bars(tmp_path: Path, captured) -> None:
    ldr, ref = _scene()
    predictions = {
        "no hallucination": ref.clamp(0, 1) * 3.0,  # another exposure: aligned away
        "learned": ref * 0.5,
        "fusion": ldr,  # display output
    }
    info = scene_figure("scene_a", input_ldr=ldr, reference=ref, predictions=predictions,
                        domains={"fusion": "display"}, path=tmp_path / "a.png", pdf=True)
    assert info.path.is_file() and info.pdf is not None and info.pdf.is_file()
    assert info.title == info.scene == "scene_a"
    assert info.columns == ["input (LDR)", "reference (HDR)", "no hallucination", "learned", "fusion"]
    assert len(info.rows) == 4 and info.rows[2] == LOG_LUMINANCE_LABEL and ERROR_LABEL in info.rows[3]
    # 4 rows x 5 columns of image / text axes plus the two shared colour bars
    assert info.num_axes == 4 * 5 + 2
    assert info.colorbars == [LOG_LUMINANCE_LABEL, ERROR_LABEL]

    drawn = captured[0]
    assert drawn["suptitle"] == "scene_a" and drawn["axes"] == info.num_axes
    # the colour bars are the last two axes, labelled
    assert drawn["ylabels"][-2:] == [LOG_LUMINANCE_LABEL, ERROR_LABEL]
    # row 1 titles name the columns; the display output says so
    assert [t.split("\n")[0] for t in drawn["titles"][:5]] == info.columns
    assert "display output" in drawn["titles"][4]
    # images: rows 1-2 for every column, row 3 for the reference and the 2 linear methods,
    # row 4 for the 2 linear methods (+ the 2 colour bars' own images are not axes images)
    assert drawn["images"] == 5 + 5 + 3 + 2
    # every row is labelled on its first axis
    assert all(drawn["ylabels"][r * 5] for r in range(4))

    # the zoom box covers the largest clipped component (rows 4-19, columns 30-51) and is square
    top, left, bottom, right = info.zoom
    assert info.zoom_source == "clipped"
    assert top <= 4 and left <= 30 and bottom >= 20 and right >= 52
    assert bottom - top == right - left >= 16
    assert 0 <= top and 0 <= left and bottom <= H and right <= W
    # aligned predictions share one log10 range that includes the reference's highlights
    assert info.log10_limits[0] < 0 < info.log10_limits[1]
    assert info.log10_limits[1] >= float(torch.log10(torch.tensor(8.0)))
    assert info.error_limit >= 1.0


def test_scene_figure_without_reference_and_size_checks(tmp_path: Path, captured) -> None:
    ldr, ref = _scene(1)
    info = scene_figure("no_ref", input_ldr=ldr, reference=None, predictions={"a": ref, "b": ref * 2},
                        path=tmp_path / "n.png", pdf=False)
    assert info.pdf is None and info.path.is_file()
    assert info.columns == ["input (LDR)", "a", "b"]
    assert info.colorbars == ["log10 luminance (unaligned)"] and info.num_axes == 4 * 3 + 1
    assert info.error_limit == 0.0
    with pytest.raises(ConfigError, match="shape"):
        scene_figure("bad", input_ldr=ldr, reference=ref, predictions={"a": ref[:, :10]}, path=tmp_path / "b.png")
    with pytest.raises(ConfigError, match="domain"):
        scene_figure("bad", input_ldr=ldr, reference=ref, predictions={"a": ref}, domains={"a": "hdr"},
                     path=tmp_path / "b.png")


def test_zoom_box_fallbacks_and_clamping() -> None:
    ldr, _ = _scene(2, big=(0, 0, 6, 10))  # a block in the corner: the box is shifted inside the image
    box, source = zoom_box(ldr)
    assert source == "clipped" and box[:2] == (0, 0) and box[2] >= 6 and box[3] >= 10 and box[2] - box[0] >= 16
    dim = torch.full((3, H, W), 0.2)
    dim[:, 20:24, 40:44] = 0.6
    box, source = zoom_box(dim)
    assert source == "brightest" and box[0] <= 20 and box[1] <= 40 and box[2] >= 24 and box[3] >= 44
    box, source = zoom_box(torch.full((3, H, W), 0.3))
    assert source == "centre" and box[2] - box[0] == 16 and box[3] - box[1] == 16


def _fake_run(root: Path, scenes: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], domain: str) -> Path:
    folder = root / "test_outputs"
    folder.mkdir(parents=True)
    for name, (pred, ldr, hdr) in scenes.items():
        save_sample_outputs(folder, name, pred, ldr, hdr)
    (folder / "outputs.json").write_text(json.dumps(
        {"domain": domain, "align": "median", "scenes": {n: n for n in scenes}}))
    return root


def test_scene_figures_from_runs_pick_the_most_clipped_shared_scenes(tmp_path: Path, captured) -> None:
    scenes = {"s_small": _scene(3, big=(4, 30, 4, 4)), "s_big": _scene(4, big=(2, 10, 30, 40)),
              "s_mid": _scene(5, big=(4, 30, 12, 12))}
    linear = _fake_run(tmp_path / "linear", {n: (ref * 0.7, ldr, ref) for n, (ldr, ref) in scenes.items()}, "linear")
    display = _fake_run(tmp_path / "display", {n: (ldr, ldr, ref) for n, (ldr, ref) in scenes.items()
                                               if n != "s_mid"}, "display")
    empty = tmp_path / "no_outputs"
    empty.mkdir()
    runs = [("method A", linear), ("fusion", display), ("missing", empty)]

    figures = scene_figures_from_runs(runs, tmp_path / "figs", pdf=False, max_scenes=1)
    assert [f.scene for f in figures] == ["s_big"]  # shared scenes only, largest clipped fraction first
    assert figures[0].path == tmp_path / "figs" / "scene_s_big.png" and figures[0].path.is_file()
    assert figures[0].columns == ["input (LDR)", "reference (HDR)", "method A", "fusion"]
    assert "display output" in captured[0]["titles"][3]

    chosen = scene_figures_from_runs(runs, tmp_path / "figs2", pdf=False, scenes=["s_small", "s_mid"])
    assert [f.scene for f in chosen] == ["s_small"]  # s_mid is not shared by every run with outputs
    assert scene_figures_from_runs([("missing", empty)], tmp_path / "figs3") == []
    assert not (tmp_path / "figs3").exists()
