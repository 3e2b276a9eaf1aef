"""Diagnostics of trained runs: read a run folder, write figures and CSVs beside it (or into ``--out``).

- ``responses.py``: ``cnnbench analyze`` -- He et al. 2016 Figure 7 (the standard deviation of each 3x3
  layer's response) and the per-layer gradient norms of one fixed batch, at the final weights and, with
  ``--at-init``, at initialization.
- ``landscape.py``: ``cnnbench landscape`` -- Li et al. 2018 loss surfaces along filter-normalized
  random directions, resumable point by point; ``landscape_plan.py`` (the checks), ``landscape_grid.py``
  (the computation), ``landscape_files.py`` (its CSV and JSON) and ``landscape_display.py`` beside it.
- ``figures.py``: the matplotlib figures of both.
- ``runs.py``: loading several runs for one comparison (labels, same dataset, where outputs go).

Nothing here changes what training wrote: each command adds its own named files.
"""
