"""Matplotlib figures without pyplot, rendered to PNG bytes.

A `matplotlib.figure.Figure` drawn on its own Agg canvas: no process-wide backend switch, no
pyplot figure registry to close (nothing leaks when a plot raises). matplotlib is imported on
first use (~0.3 s), so the CLIs that only may plot do not pay for it to print a one-line error.
"""
from __future__ import annotations

import io
from typing import Any, Tuple


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: Tuple[float, float],
             **kwargs: Any) -> Tuple[Any, Any]:
  """A new figure of `figsize` inches and its axes (`Figure.subplots`: `squeeze`, `sharex`, ...)
  -> (figure, axes)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top  (slow: see above)
  fig = Figure(figsize=figsize)
  return fig, fig.subplots(nrows, ncols, **kwargs)


def png_bytes(fig: Any, **savefig_kwargs: Any) -> bytes:
  """`fig` rendered as PNG by the Agg canvas (`savefig_kwargs`: dpi, bbox_inches, ...)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", **savefig_kwargs)
  return buf.getvalue()
