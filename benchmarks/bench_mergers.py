"""Benchmark: hdrlab's classical mergers against OpenCV on one 1024x768, 3-exposure bracket.

Times, in the same process and run, (a) Debevec response recovery + radiance merge
(``DebevecMerger(crf="recover")`` vs ``cv2.createCalibrateDebevec`` + ``cv2.createMergeDebevec``),
(b) the Debevec merge with a given response, no recovery (``merge_debevec(codes, times, response)`` vs
``cv2.createMergeDebevec().process(codes, times, response)``, both with OpenCV's calibrated response)
and (c) Mertens exposure fusion with the same weights (``MertensMerger(clip=False)`` vs
``cv2.createMergeMertens(1, 1, 1)``). Reports the median over ``--repeats`` runs after one warm-up
(the two sides of a case alternate run by run, so load changes hit both) and the ratio hdrlab time /
OpenCV time, plus the agreement of the outputs. Both libraries run with the same number of threads
(``--threads``, default 1: torch's OpenMP threads degrade badly when the cores are shared with other
work, OpenCV's pool much less, so equal single-threaded runs are the fair and reproducible
comparison). ``cv2.setNumThreads`` does not reach the LAPACK OpenCV links (OpenBLAS, which runs the
SVD of ``CalibrateDebevec`` on its own threads), so the OpenBLAS thread count is set too
(``openblas_set_num_threads``); the process CPU time of each call is reported next to the wall time.

Usage: ``python benchmarks/bench_mergers.py [--repeats 15] [--threads 1] [--width 1024 --height 768] [--json PATH]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from hdrlab.models.mergers import DebevecMerger, MertensMerger
from hdrlab.models.mergers.debevec import merge_debevec
from hdrlab.stack import ExposureStack

EVS = (-2.0, 0.0, 2.0)


def bracket(height: int, width: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Smooth textured radiance (about 10 stops) and its gamma-2.2, 8-bit bracket at ``EVS``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width], dtype=np.float64)[:, None, None]
    base = np.exp(2.5 * np.sin(3 * xx + 1) * np.cos(2 * yy) + 1.5 * xx - 1.5)
    hdr = np.stack([0.8 * base, base, 1.3 * base], axis=-1) * (1 + 0.05 * rng.standard_normal((height, width, 3)))
    codes = [np.round(255 * np.clip(hdr * 2.0**ev, 0, 1) ** (1 / 2.2)).astype(np.uint8) for ev in EVS]
    return hdr, codes


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object, float]:
    """Median wall time, last result and median process CPU time of ``fn()`` after one warm-up."""
    (wall, result, cpu), = median_times([fn], repeats)
    return wall, result, cpu


def median_times(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, object, float]]:
    """:func:`median_time` of several functions, run alternately (one warm-up call each first)."""
    results = [fn() for fn in fns]
    walls: list[list[float]] = [[] for _ in fns]
    cpus: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            results[i] = fn()
            walls[i].append(time.perf_counter() - start)
            cpus[i].append(time.process_time() - start_cpu)
    return [(statistics.median(w), r, statistics.median(c)) for w, r, c in zip(walls, results, cpus)]


def set_openblas_threads(threads: int) -> int | None:
    """Set the thread count of every OpenBLAS loaded in this process (OpenCV's LAPACK); returns the
    count OpenBLAS reports afterwards, ``None`` when no OpenBLAS is loaded."""
    seen, count = set(), None
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in maps:
        path = line.split()[-1] if line.split() else ""
        if "openblas" not in Path(path).name.lower() or path in seen:
            continue
        seen.add(path)
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_set_num_threads(int(threads))
            count = int(lib.openblas_get_num_threads())
        except (OSError, AttributeError):
            continue
    return count


def case(ours: tuple[float, object, float], cv: tuple[float, object, float]) -> dict[str, float]:
    """The timing keys of one case: wall and CPU times of both sides and the wall-time ratio."""
    return {"hdrlab_s": ours[0], "opencv_s": cv[0], "ratio": ours[0] / cv[0],
            "hdrlab_cpu_s": ours[2], "opencv_cpu_s": cv[2]}


def run(height: int, width: int, repeats: int, openblas_threads: int | None = None) -> dict[str, object]:
    _, codes = bracket(height, width)
    times = (2.0 ** np.asarray(EVS)).astype(np.float32)
    # OpenCV's MergeMertens converts codes as ``code * float32(1/255)``, which differs from ``code / 255``
    # by one float32 ulp for ~30 % of the codes; hdrlab gets the same float input so that the comparison
    # is of the algorithms (an ulp flips grey Laplacians between 0 and 1e-7 in flat, clipped regions,
    # where those residues alone decide the normalised weights)
    images = torch.from_numpy(np.stack(codes)).permute(0, 3, 1, 2).unsqueeze(0).float() * np.float32(1.0 / 255.0)
    stack = ExposureStack(images=images, ev=torch.tensor([EVS]), reference=1)
    calibrate, merge = cv2.createCalibrateDebevec(70, 10.0, False), cv2.createMergeDebevec()
    mertens_cv = cv2.createMergeMertens(1.0, 1.0, 1.0)
    debevec, mertens = DebevecMerger(crf="recover"), MertensMerger(clip=False)

    def cv_debevec() -> np.ndarray:
        return merge.process(codes, times, calibrate.process(codes, times))

    response = calibrate.process(codes, times)  # the given response of the known-CRF case (both sides)
    with torch.no_grad():
        deb, cv_deb = median_times([lambda: debevec(stack), cv_debevec], repeats)
        known, cv_known = median_times([lambda: merge_debevec(codes, times, response),
                                        lambda: merge.process(codes, times, response)], repeats)
        mer, cv_mer = median_times([lambda: mertens(stack), lambda: mertens_cv.process(codes)], repeats)
    hdr, cv_hdr = deb[1], cv_deb[1]
    ours_hdr = hdr[0].permute(1, 2, 0).numpy()
    ratio = ours_hdr / cv_hdr
    # each channel's response is fixed up to scale differently (OpenCV: r(128) = 1 at t = 1;
    # hdrlab: r(255) = 1 in the reference exposure), so compare after one scale per channel
    rel = np.abs(ratio / np.median(ratio.reshape(-1, 3), axis=0) - 1)
    known_rel = np.abs(known[1].numpy() / cv_known[1] - 1)
    mertens_diff = np.abs(mer[1][0].permute(1, 2, 0).numpy() - cv_mer[1]).max(axis=-1)
    return {
        "size": [width, height],
        "exposures": len(EVS),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(),
        "opencv_lapack_threads": openblas_threads,
        "opencv": cv2.__version__,
        "debevec": {
            **case(deb, cv_deb),
            "median_rel_diff_vs_opencv": float(np.median(rel)),
            "p99_rel_diff_vs_opencv": float(np.percentile(rel, 99)),
        },
        "debevec_known_crf": {
            **case(known, cv_known),
            "max_rel_diff_vs_opencv": float(known_rel.max()),
        },
        "mertens": {
            **case(mer, cv_mer),
            "max_abs_diff_vs_opencv": float(mertens_diff.max()),
            # pixels whose weights are all at OpenCV's 1e-12 floor follow float32 rounding noise
            "fraction_pixels_diff_above_1e-4": float((mertens_diff > 1e-4).mean()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="threads of both torch and OpenCV (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    res = run(args.height, args.width, args.repeats, set_openblas_threads(args.threads))
    print(f"{args.width}x{args.height}, {len(EVS)} exposures, median of {args.repeats} (OpenCV {res['opencv']}, "
          f"torch threads {res['torch_threads']}, OpenCV threads {res['opencv_threads']}, "
          f"OpenCV LAPACK threads {res['opencv_lapack_threads']})")
    for name in ("debevec", "debevec_known_crf", "mertens"):
        r = res[name]
        print(f"  {name:17s} hdrlab {r['hdrlab_s'] * 1e3:8.1f} ms   OpenCV {r['opencv_s'] * 1e3:8.1f} ms   "
              f"ratio {r['ratio']:6.2f}   (CPU time ratio {r['hdrlab_cpu_s'] / r['opencv_cpu_s']:.2f})")
    d = res["debevec"]
    print(f"  debevec radiance vs OpenCV (one scale per channel): median {d['median_rel_diff_vs_opencv']:.4f}, "
          f"p99 {d['p99_rel_diff_vs_opencv']:.4f}")
    print(f"  debevec known CRF vs OpenCV (same response): max rel {res['debevec_known_crf']['max_rel_diff_vs_opencv']:.2e}")
    m = res["mertens"]
    print(f"  mertens vs OpenCV: max abs {m['max_abs_diff_vs_opencv']:.2e}, "
          f"pixels above 1e-4: {100 * m['fraction_pixels_diff_above_1e-4']:.4f} %")
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
