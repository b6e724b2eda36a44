"""Report building blocks of ``hdrlab compare`` (:func:`hdrlab.sweep.compare.write_report`).

* :mod:`hdrlab.report.tables` — metric names (domain, region, direction, label), one results
  table per output domain (linear / display), the table of config differences, and their
  Markdown / CSV / HTML renderings;
* :mod:`hdrlab.report.figures` — main metric per group (bars, or a generator x merger heatmap
  for real grids), metric against numeric parameters, the validation preview grid;
* :mod:`hdrlab.report.curves` — training and validation curves against samples seen, read from
  each run's ``metrics.csv``;
* :mod:`hdrlab.report.scenes` — per-scene test results (``test_per_sample.csv``) against named
  reference runs (``--reference``): win counts, mean paired differences with t-intervals;
* :mod:`hdrlab.report.scene_figure` — one labelled comparison figure per test scene (tone-mapped
  outputs, a zoom on the largest clipped region, log10 luminance and error maps with shared colour
  bars), drawn from runs' ``test_outputs/`` (``hdrlab test --save_test_outputs true``);
* :mod:`hdrlab.report.page` — the self-contained ``index.html`` (embedded stylesheet).

Importing these modules imports neither torch nor matplotlib (matplotlib is imported when a figure
is drawn, torch when a scene figure is drawn); the user guide is ``docs/compare.md``.
"""
