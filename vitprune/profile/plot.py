"""Latency-vs-tokens plot of a profile (`vitprune.figure`: matplotlib imported on first use),
written atomically."""
from __future__ import annotations

from typing import Optional

from vitprune import atomic, figure
from vitprune.profile import records


def plot_profile(profile: records.Profile, path: str, *, component: Optional[str] = None) -> str:
  """Median latency (ms, IQR error bars) vs tokens kept, one line per batch size, steps marked
  (v), lone counts (x: slower or faster than both neighbours).

  `component`: 'model' or 'block'; default the profile's mode ('block' for a `--mode=block`
  profile, whose few whole-model points are predictor checks, not a curve), else 'model' if
  measured. A block curve is shown next to its predictor checks (the per-block sum vs the
  measured graph) when the profile has them. Returns `path`.
  """
  have = {p.component for p in profile.points}
  if component is None:
    block_mode = "block" in profile.modes and "model" not in profile.modes
    component = "block" if block_mode and "block" in have else (
        "model" if "model" in have else "block")
  if component not in records.CURVE_COMPONENTS:
    raise ValueError(f"can plot only {records.CURVE_COMPONENTS}, got {component!r}")
  if component not in have:
    raise ValueError(f"profile of {profile.model} has no {component!r} points to plot")
  # (a --mode=schedule profile's checks are schedules, all entering block 0 at N: no curve)
  checks = ([c for c in profile.predictions if c["component"] == "model"]
            if component == "block" else [])
  fig, axes = figure.subplots(1, 2 if checks else 1, figsize=(12 if checks else 8, 4.5),
                              squeeze=False)
  ax = axes[0][0]
  said = set()            # (each mark's legend entry once: a probe found an 'x' unexplained)

  def once(what: str) -> str:
    new = what not in said
    said.add(what)
    return what if new else "_"

  for b in profile.batch_sizes:
    pts = profile.curve(component, b)
    if not pts:
      continue
    n = [p.tokens for p in pts]
    med = [1e3 * p.median_s for p in pts]
    err = [[1e3 * (p.median_s - p.q25_s) for p in pts], [1e3 * (p.q75_s - p.median_s)
                                                          for p in pts]]
    line = ax.errorbar(n, med, yerr=err, marker=".", ms=3, lw=1, capsize=0,
                       label=f"batch {b}")
    color = line[0].get_color()
    by_n = {p.tokens: 1e3 * p.median_s for p in pts}
    for s in profile.steps:
      if s["component"] == component and s["batch_size"] == b:
        ax.axvline(s["n_from"], color=color, alpha=0.25, lw=1)
        ax.plot([s["n_from"]], [by_n[s["n_from"]]], "v", color=color, ms=6,
                label=once("step (v: the count above it)"))
    for c in profile.lone_counts:        # out of line with both neighbours: not a step
      if c["component"] == component and c["batch_size"] == b:
        ax.plot([c["n"]], [by_n[c["n"]]], "x", color=color, ms=6,
                label=once("lone count (x: out of line with both neighbours, not a step)"))
  ax.set_xlabel("tokens kept (entering block 0)" if component == "model"
                else "tokens entering the block")
  ax.set_ylabel("latency, median (ms)" + (" per block" if component == "block" else "")
                + "; bars: IQR")
  ax.set_title(f"{profile.model} {component} | {profile.dtype} | {profile.device_kind} "
               f"({profile.platform})", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  if checks:
    _plot_checks(axes[0][1], checks)
  fig.tight_layout()
  atomic.write_bytes(path, figure.png_bytes(fig, dpi=120))
  return path


def _plot_checks(ax, checks) -> None:
  """Predictor checks: each measured whole graph (x: the tokens entering block 0) against the
  per-block sum predicted for it."""
  for b in sorted({c["batch_size"] for c in checks}):
    mine = sorted((c for c in checks if c["batch_size"] == b), key=lambda c: c["schedule"][0])
    n = [c["schedule"][0] for c in mine]
    line = ax.plot(n, [1e3 * c["measured_s"] for c in mine], "o", ms=5,
                   label=f"batch {b} measured graph")
    ax.plot(n, [1e3 * c["predicted_s"] for c in mine], "x", ms=6, color=line[0].get_color(),
            label=f"batch {b} per-block sum (predicted)")
  ax.set_xlabel("tokens kept (entering block 0)")
  ax.set_ylabel("whole-model latency, median (ms)")
  ax.set_title("predictor checks: per-block sum vs measured graph", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
