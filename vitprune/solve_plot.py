"""Plots of a `Solution` as PNG bytes (`vitprune.figure`: matplotlib imported on first use).

  paper mode: U(n), L(n) and A(n) against n, n* marked;
  multi mode: the frontier's predicted (latency, accuracy), the chosen and unpruned schedules,
              and, where schedules were checked, their measured accuracy (with its binomial
              interval) and measured latency (predicted -> measured point joined by a line);
              the accuracy floor or latency budget as a dotted line; the latency axis
              says which of its points are measured.
"""
from __future__ import annotations

from vitprune import figure
from vitprune.records.solution import Solution, measured_interval


def _png(fig) -> bytes:
  return figure.png_bytes(fig, dpi=120, bbox_inches="tight")


def plot_paper(sol: Solution) -> bytes:
  """PNG: U(n), L(n) (ms) and A(n) vs n, n* marked."""
  c, n_star = sol.curve, sol.chosen.tokens
  fig, axes = figure.subplots(3, 1, figsize=(7, 7), sharex=True)
  series = (("utility U(n)", c["utility"], 1.0),
            (f"latency L(n) [ms] ({sol.profile.latency_source})", c["latency_s"], 1e3),
            (f"{sol.metric} A(n)", c["accuracy"], 1.0))
  i = list(c["tokens"]).index(n_star)
  for ax, (label, ys, scale) in zip(axes, series):
    ax.plot(c["tokens"], [scale * y for y in ys], ".-", ms=3, lw=1)
    ax.axvline(n_star, color="C3", ls="--", lw=1)
    ax.plot([n_star], [scale * ys[i]], "o", color="C3")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_title(f"{sol.model}: n* = {n_star} (alpha = {sol.settings.get('alpha')}), "
                    f"{sol.chosen.schedule}")
  axes[-1].set_xlabel("tokens kept n")
  return _png(fig)


def plot_frontier(sol: Solution) -> bytes:
  """PNG: predicted latency (ms) vs predicted accuracy of the frontier; measured accuracy of the
  schedules checked on the data; chosen and unpruned marked."""
  fr = sol.frontier
  fig, ax = figure.subplots(figsize=(7, 4.5))
  ax.step([1e3 * p.predicted_latency_s for p in fr], [p.predicted_accuracy for p in fr],
          where="post", marker=".", ms=3, lw=1, label="Pareto frontier (predicted)")
  measured = [p for p in sol.checked if p.measured_accuracy is not None]
  if measured:
    ax.plot([1e3 * p.predicted_latency_s for p in measured],
            [p.measured_accuracy for p in measured], "x", color="C2",
            label=f"checked on the data (predicted latency, measured {sol.metric})")
    ci = [(p, *measured_interval(p, sol)) for p in measured
          if p.measured_accuracy_low is not None]
    if ci:       # (the interval the floor is judged by: a confident drop's is paired)
      ax.errorbar([1e3 * p.predicted_latency_s for p, _, _ in ci],
                  [p.measured_accuracy for p, _, _ in ci],
                  yerr=[[max(p.measured_accuracy - lo, 0.0) for p, lo, _ in ci],
                        [max(hi - p.measured_accuracy, 0.0) for p, _, hi in ci]],
                  fmt="none", ecolor="C2", alpha=0.4, lw=1)
  timed = [p for p in sol.checked if p.measured_latency_s is not None and
           p.measured_accuracy is not None]
  for p in timed:
    ax.plot([1e3 * p.predicted_latency_s, 1e3 * p.measured_latency_s],
            [p.measured_accuracy] * 2, "-", color="C1", lw=0.8, alpha=0.6)
  if timed:
    ax.plot([1e3 * p.measured_latency_s for p in timed], [p.measured_accuracy for p in timed],
            "+", color="C1", ms=8, label=f"measured latency and {sol.metric}")
  # (a measured unpruned latency apart from its prediction: paper mode's measured curve gives
  # both the same; one timed in the loop with the choice is among `timed`, its join drawn)
  full_timed = (sol.full is not None and sol.full.measured_latency_s is not None
                and sol.full.measured_latency_s != sol.full.predicted_latency_s)
  if sol.full is not None:     # (its accuracy: the estimate's measurement, where it has one)
    full_measured = sol.full.measured_accuracy is not None
    full_acc = sol.full.measured_accuracy if full_measured else sol.full.predicted_accuracy
    ax.plot([1e3 * sol.full.predicted_latency_s], [full_acc], "s",
            color="k", label=f"unpruned (predicted latency, "
                             f"{'measured' if full_measured else 'predicted'} {sol.metric})")
    # (timed, by the profile or with the choice: its predicted point alone sat x1.8 away from
    # the measured chosen graph, which measured x1.12 faster)
    if full_timed and sol.full.counts not in {p.counts for p in timed}:
      ax.plot([1e3 * sol.full.predicted_latency_s, 1e3 * sol.full.measured_latency_s],
              [full_acc] * 2, "-", color="k", lw=0.8, alpha=0.6)
    if full_timed:
      ax.plot([1e3 * sol.full.measured_latency_s], [full_acc], "s", mfc="none", color="k",
              label="unpruned (measured latency)")
  floor, budget = sol.settings.get("accuracy_floor"), sol.settings.get("latency_budget")
  if floor is not None:
    ax.axhline(floor, color="C3", ls=":", lw=1, label=f"accuracy floor {floor:g}")
  if budget is not None:
    ax.axvline(1e3 * budget, color="C3", ls=":", lw=1,
               label=f"latency budget {1e3 * budget:.4g} ms")
  ch = sol.chosen
  # (the point is its prediction, whatever the choice rests on: labelled "measured" after
  # the choice's criterion, it sat below the floor it met on measurement)
  ax.plot([1e3 * ch.predicted_latency_s], [ch.predicted_accuracy], "o", color="C3",
          label=f"chosen, predicted ({sol.criterion}): {ch.schedule}")
  star = ch.measured_latency_s is not None and ch.measured_accuracy is not None
  if star:
    ax.plot([1e3 * ch.measured_latency_s], [ch.measured_accuracy], "*", color="C3", ms=10,
            label="chosen (measured)")
  # (measured latencies share the axis: said, not left to read as predicted by its label)
  marks = [m for m, drawn in (("+", timed), ("*", star), ("open square", full_timed)) if drawn]
  marks = " and ".join([", ".join(marks[:-1]), marks[-1]] if len(marks) > 2 else marks)
  ax.set_xlabel(f"latency [ms] (predicted: {sol.profile.latency_source}"
                + (f"; {marks} measured)" if marks else ")"))
  ax.set_ylabel(sol.metric)
  ax.set_title(f"{sol.model} ({sol.mode} mode)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _png(fig)


def plot_solution(sol: Solution) -> bytes:
  return plot_paper(sol) if sol.mode == "paper" else plot_frontier(sol)
