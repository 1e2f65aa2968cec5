"""The solution in words: `summary_lines`, what `experiments.solve` and the main job print
about a `vitprune.records.solution.Solution`, and the one-line descriptions of its settings
(the refinement, the accuracy model's errors, a budget's cost) the main job reuses. Predicted
numbers say they are predicted; measured ones say where they were measured."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from vitprune import solve as solve_lib
from vitprune.console import counted
from vitprune.profile import protocol
from vitprune.records.solution import (ERROR_FIGURES, Solution, judges_paired_change,
                                       meets_measured_floor, pruned_meeting_floor)


def within_spread_note(sol: Solution) -> Optional[str]:
  """'note: A, B also meet the floor, timed within the spread of the chosen graph ...': the
  other checked schedules that meet the floor on measurement (`meets_measured_floor`) and were
  timed within the spread of a floor's measured choice (`protocol.within_spread`, both IQRs
  recorded), which the timing the choice rests on cannot tell from it (a choice 0.7 % faster
  than the next said nothing of it); None where there are none, or for other choices."""
  ch = sol.chosen
  if sol.criterion != "accuracy_floor_measured" or ch.measured_latency_iqr_s is None:
    return None
  close = [c.schedule for c in sol.checked
           if c.counts != ch.counts and c.measured_latency_iqr_s is not None
           and meets_measured_floor(c, sol.settings)
           and protocol.within_spread(c.measured_latency_s, c.measured_latency_iqr_s,
                                      ch.measured_latency_s, ch.measured_latency_iqr_s)]
  if not close:
    return None
  return (f"note: {shown_schedules(close)} also {'meet' if len(close) > 1 else 'meets'} the "
          "floor, timed within the spread of the chosen graph (the medians differ by less "
          "than the larger IQR): this measurement cannot tell them apart")


def shown_schedules(names: Sequence[str], most: int = 8) -> str:
  """'a, b, c' or, beyond `most` names, the first `most` and how many more (a line listing
  every single reduction whose interval straddles a floor ran to hundreds of names)."""
  names = list(names)
  more = len(names) - most
  return ", ".join(names[:most]) + (f" and {more} more" if more > 0 else "")


def _grid_text(sol: Solution) -> str:
  """' (n, n, ...)': the counts the solver chose among (settings.grid; paper: the curve's)."""
  grid = sol.settings.get("grid") or (sol.curve or {}).get("tokens")
  return "" if grid is None else f" ({', '.join(map(str, grid))})"


def _unpruned_latency_s(sol: Solution) -> Optional[float]:
  """The unpruned graph's latency, measured where it was, else predicted (None: not listed)."""
  if sol.full is None:
    return None
  return sol.full.measured_latency_s or sol.full.predicted_latency_s


def picked_by_untrusted_model(settings: Dict[str, Any]) -> str:
  """A choice timed in the loop among schedules a latency model beyond its error limit picked
  (a probe: p90 40.9 % said nothing once the choice was measured, and the frontier it shaped
  had lost the faster schedules); '' otherwise."""
  why = settings.get("latency_model_untrusted")
  if not why or settings.get("latency_basis") != "measured":
    return ""
  return (f"note: {why}: it picked the schedules timed in the loop, so a faster one it "
          "mispredicted may not have been timed (the profile's machine was busy, or its "
          "calibration too small: profile again)")


def _unpruned_latency_text(sol: Solution) -> str:
  """'1.117 ms (predicted)', '(measured by the profile)', or timed in the loop beside the
  chosen graph, with the speed-up of that one measurement."""
  full, ch = sol.full, sol.chosen
  if full.measured_latency_s is None:     # (a paper solution written before 2026-12-06 kept
    measured_curve = sol.mode == "paper" and sol.profile.latency_source == "measured"  # L(N)
    return (f"{1e3 * full.predicted_latency_s:.4g} ms "                 # as predicted only)
            f"({'measured by the profile' if measured_curve else 'predicted'})")
  if sol.settings.get("latency_basis") != "measured" or ch.measured_latency_s is None:
    return f"{1e3 * full.measured_latency_s:.4g} ms (measured by the profile)"
  return (f"{1e3 * full.measured_latency_s:.4g} ms (measured in the loop with the chosen graph: "
          f"speed-up x{full.measured_latency_s / ch.measured_latency_s:.3f})")


def _basis_text(sol: Solution) -> str:
  """'predicted numbers', 'measured numbers', or 'measured accuracy and predicted latency' (a
  multi-mode basis "measured" whose latency was not timed: it read as measured throughout)."""
  if (sol.basis == "measured" and sol.mode == "multi"
      and sol.settings.get("latency_basis") != "measured"):
    return f"measured {sol.metric} and predicted latency"
  return f"{sol.basis} numbers"


def reaimed_text(rounds: Sequence[int]) -> str:
  """'5 + 5: re-aimed 1x by the measured / predicted ratio': the graphs a budget check timed
  per measurement (settings["timed_rounds"]), each after the first aimed anew."""
  return (f"{' + '.join(map(str, rounds))}: re-aimed {len(rounds) - 1}x by the measured / "
          "predicted ratio")


def summary_lines(sol: Solution) -> List[str]:
  """Human-readable summary; predicted numbers say they are predicted."""
  ch, full, m = sol.chosen, sol.full, sol.metric
  lines = [f"model {sol.model} ({sol.mode} mode, batch {sol.profile.batch_size}, "
           f"{sol.profile.device_kind}, metric {m})",
           f"chosen schedule: {ch.schedule}  counts {','.join(map(str, ch.counts))}  "
           f"method {sol.method}  ({sol.criterion}, rests on {_basis_text(sol)})",
           f"predicted latency {1e3 * ch.predicted_latency_s:.4g} ms, predicted {m} "
           f"{ch.predicted_accuracy:.4f}"]
  if sol.mode == "paper":      # the curves' values at n*: A(n*) this schedule's where measured
    summed_by = (" as the per-block table sums it"
                 if sol.profile.latency_source == "predicted_from_blocks" else "")
    lines[-1] = (f"utility at n* = {ch.tokens}: U = {sol.utility:.4f} from the curves' "
                 f"latency L(n*) {1e3 * ch.predicted_latency_s:.4g} ms and {m} A(n*) "
                 f"{ch.predicted_accuracy:.4f} " + (
                     f"(L: the uniform graph of n* tokens{summed_by}, a prediction of this "
                     "schedule's; A: measured by the estimate on this schedule)"
                     if ch.measured_accuracy is not None else
                     ("(the per-block table's sum and the estimate's graph for n* tokens, not "
                      if summed_by else "(the profile's and the estimate's graphs of n* tokens, "
                      "not ") + "this schedule's: predictions of it)"))
    if sol.schedule_latency_s is not None:
      lines.append(f"the chosen schedule's latency by the per-block table (predicted): "
                   f"{1e3 * sol.schedule_latency_s:.4g} ms")
  lm = sol.settings.get("latency_model") or {}
  if sol.profile.latency_source == "calibrated-graph" and all(
      k in lm for k in ("num_calibration", "residual_median", "residual_p90")):
    # (solutions written before `num_reducing`: residuals over every graph, uniform ones too)
    scored = (f"|error| on the {lm['num_reducing']} that reduce" if "num_reducing" in lm else
              "calibration |error|")
    lines.append(f"latency model: calibrated on {lm['num_calibration']} compiled graphs, "
                 f"{scored}: median {100 * lm['residual_median']:.1f}%, p90 "
                 f"{100 * lm['residual_p90']:.1f}%")
  if sol.settings.get("unused_estimate_counts"):
    lines.append(f"note: the estimate's counts {sol.settings['unused_estimate_counts']} are not "
                 f"on the solver's grid{_grid_text(sol)}: the profile lacks them (or its "
                 "latency model was not calibrated there)")
  if sol.settings.get("interpolated_counts"):
    lines.append(f"note: the latency model's uniform curve was not measured at the counts "
                 f"{sol.settings['interpolated_counts']} of the grid: their latency is "
                 "interpolated between their neighbours, so a step between them is not seen "
                 "(profile with --tokens holding the estimate's counts)")
  if sol.settings.get("capped_counts"):
    lines.append(describe_capped(sol))
  if sol.settings.get("budget_provisional"):
    lines.append(f"warning: {sol.settings['budget_provisional']}: the budget is "
                 f"{1e3 * sol.settings['latency_budget']:.4g} ms")
  budget, unpruned_s = sol.settings.get("latency_budget"), _unpruned_latency_s(sol)
  if budget is not None and unpruned_s and budget >= unpruned_s:  # (a budget meant in ms)
    lines.append(f"note: the latency budget, {budget:g} s, is {budget / unpruned_s:.3g}x the "
                 f"unpruned graph's {1e3 * unpruned_s:.4g} ms: the unpruned graph fits it "
                 "(--latency_budget is in seconds)")
  summed = {"multi": "blocks", "paper": "predicted_from_blocks"}.get(sol.mode)
  if (sol.profile.latency_source == summed
      and sol.settings.get("latency_basis") != "measured"):
    lines.append("note: latencies predicted as sums of blocks timed alone, not of the compiled "
                 "graph (off by tens of percent or more, either way): " + (
                     "a profile with calibration schedules (the main job's --solver=multi) "
                     "predicts the graph, --weights times the choice" if sol.mode == "multi"
                     else "a profile of the whole model (--mode=model) measures the uniform "
                     "graphs paper mode weighs"))
  elif (sol.mode == "multi" and budget is not None
        and sol.settings.get("latency_basis") != "measured"):   # (a calibrated prediction)
    lines.append("note: the budget is met by the predicted latency alone: --weights times the "
                 "choice and its neighbours, and the budget then means measured latency")
  if (sol.mode == "multi" and ch.measured_accuracy is None     # (a single reduction, or none:
      and solve_lib.is_multi_reduction(ch.counts)               # the estimate measured it)
      and sol.settings.get("accuracy_floor") is not None):
    lines.append("note: the floor is met by the predicted accuracy alone (single-layer "
                 "sensitivities combined, optimistic where the solver searches): --weights "
                 "measures the choice, and the floor then means measured accuracy")
  if sol.settings.get("latency_untrusted"):
    lines.append(f"warning: the predicted latency is not to be trusted: "
                 f"{sol.settings['latency_untrusted']}")
  picked = picked_by_untrusted_model(sol.settings)
  if picked:
    lines.append(picked)
  drop = sol.settings.get("max_accuracy_drop")
  if drop is not None and full is not None:
    lines.append(f"accuracy floor {sol.settings['accuracy_floor']:.6g}: the unpruned schedule's "
                 f"measured {m} {full.predicted_accuracy:.4f} minus the maximum drop {drop:g}")
  if sol.settings.get("floor_confidence") and full is not None:
    if ch.counts == full.counts:
      meeting = len(pruned_meeting_floor(sol))
      lines.append(f"floor met with 95% confidence by {meeting} pruned schedules, but the "
                   "unpruned graph measured fastest: it is chosen" if meeting else
                   "floor met with 95% confidence by no pruned schedule: the unpruned one is "
                   "chosen")
    elif drop is not None and ch.measured_change_low is not None:
      lines.append(f"floor met with 95% confidence: the chosen schedule's change against the "
                   f"unpruned one, paired 95% interval {ch.measured_change_low:+.4f}.."
                   f"{ch.measured_change_high:+.4f}, is >= -{drop:g}")
    elif ch.measured_accuracy_low is not None:
      lines.append(f"floor met with 95% confidence: the chosen schedule's 95% interval "
                   f"{ch.measured_accuracy_low:.4f}..{ch.measured_accuracy_high:.4f} is >= "
                   f"{sol.settings['accuracy_floor']:.6g}")
  if ch.measured_accuracy is not None:
    line = f"measured {m} of the chosen schedule on the data: {ch.measured_accuracy:.4f}"
    if ch.num_images is not None:
      line += (f" (95% interval {ch.measured_accuracy_low:.4f}..{ch.measured_accuracy_high:.4f}"
               f", {counted(ch.num_images, 'image')})")
    lines.append(line)
  if ch.measured_latency_s is not None:
    rounds = sol.settings.get("timed_rounds") or []
    lines.append(f"measured latency of the chosen compiled graph: "
                 f"{1e3 * ch.measured_latency_s:.4g} ms"
                 + ("" if ch.measured_latency_iqr_s is None else
                    f" (IQR {1e3 * ch.measured_latency_iqr_s:.2g} ms)")
                 + ("" if len(rounds) < 2 else   # (a budget the first graphs timed missed)
                    f" (graphs timed in {len(rounds)} measurements, {reaimed_text(rounds)})"))
    close = within_spread_note(sol)
    if close:
      lines.append(close)
  if budget is not None and full is not None and ch.counts != full.counts:
    lines.append(_budget_cost_line(sol))
  err = checked_error_shown(sol.settings)
  if err:
    lines.append(describe_checked_error(err))
  err = sol.settings.get("frontier_accuracy_error")
  if err:
    lines.append(describe_frontier_error(err))
  refined = sol.settings.get("accuracy_refinement")
  if refined:
    lines.append(describe_refinement(refined))
  if sol.settings.get("floor_straddles"):
    lines.append(f"{'paired ' if judges_paired_change(sol.settings) else ''}interval "
                 f"straddles the floor {sol.settings['accuracy_floor']:.6g} for: "
                 + shown_schedules(sol.settings["floor_straddles"]))
  if full is not None:
    lines.append(f"unpruned: {_unpruned_latency_text(sol)}, {m} "
                 f"{full.predicted_accuracy:.4f} (measured by the estimate"
                 + (")" if full.num_images is None else
                    f", {counted(full.num_images, 'image')})"))
  lines.append(f"frontier: {counted(len(sol.frontier), 'non-dominated schedule')}"
               + (f"; {len(sol.checked)} checked on the data" if sol.checked else ""))
  return lines


def budget_cost_text(budget_s: float, metric: str, chosen: float, unpruned: float) -> str:
  """'the latency budget 0.8 ms costs 3.06 points of accuracy' ('gains' when `chosen` is
  above `unpruned`): what a budget's choice gives up (a summary listed the two numbers lines
  apart, and a budget that cost 45 points read like any other choice)."""
  lost = 100 * (unpruned - chosen)
  return (f"the latency budget {1e3 * budget_s:.4g} ms "
          + (f"costs {lost:.2f}" if lost >= 0 else f"gains {-lost:.2f}") + f" points of {metric}")


def _budget_cost_line(sol: Solution) -> str:
  """`budget_cost_text` of a budget's choice against the unpruned schedule (the chosen
  schedule's measured accuracy where it has one, else its prediction)."""
  ch, full = sol.chosen, sol.full
  measured = ch.measured_accuracy is not None
  acc = ch.measured_accuracy if measured else ch.predicted_accuracy
  return (budget_cost_text(sol.settings["latency_budget"], sol.metric, acc,
                           full.predicted_accuracy)
          + f": the chosen schedule's {'measured' if measured else 'predicted'} {acc:.4f} "
          f"against the unpruned schedule's {full.predicted_accuracy:.4f}")


def _errs_by(err: Dict[str, Any]) -> str:
  """An error summary (`solve_loop._error_points`) in words: 'errs by 1.23 points on average
  (max 4.56, mean signed +0.78; predicted - measured)'."""
  return (f"errs by {err['mean_abs_points']:.2f} points on average (max "
          f"{err['max_abs_points']:.2f}, mean signed {err['mean_signed_points']:+.2f}; "
          f"predicted - measured)")


def describe_capped(sol: Solution) -> str:
  """The note on `settings['capped_counts']` (paper mode: counts its method cannot reach)."""
  return (f"note: the counts {sol.settings['capped_counts']} were measured but left out: "
          f"{sol.method} cannot reach them from {sol.config.num_tokens} tokens in one block "
          "(its per-block limit)")


def checked_error_shown(settings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """`settings['checked_accuracy_error']`, unless it repeats the frontier's error figure for
  figure (`--measure_frontier` measured every multi-layer schedule the floor check then read:
  the same line twice)."""
  err, front = settings.get("checked_accuracy_error"), settings.get("frontier_accuracy_error")
  if err and front and all(err[k] == front[k] for k in ERROR_FIGURES):
    return None
  return err or None


def describe_checked_error(err: Dict[str, Any]) -> str:
  """One line for `settings['checked_accuracy_error']` (the floor check's multi-layer schedules,
  each predicted before it was measured)."""
  return (f"combined accuracy model vs the {err['num_schedules']} measured multi-layer "
          f"schedules, predicted before measuring: {_errs_by(err)}")


def describe_frontier_error(err: Dict[str, Any]) -> str:
  """One line for `settings['frontier_accuracy_error']` (`solve_loop.measure_frontier`); the
  schedules the estimate had measured (the model's own table) are named, not scored."""
  left_out = err.get("unscored", 0)
  head = f"every frontier schedule measured on the data ({err['num_schedules'] + left_out})"
  if not left_out:
    return f"{head}: the combined accuracy model {_errs_by(err)}"
  aside = (f"{counted(left_out, 'schedule')} the estimate had measured, the model's own table, "
           "not scored")
  if not err["num_schedules"]:
    return f"{head}: {aside}, none left to score"
  return (f"{head}: the combined accuracy model, on the {err['num_schedules']} it had not seen "
          f"measured, {_errs_by(err)} ({aside})")


def describe_refinement(ref: Dict[str, Any]) -> str:
  """One line for `settings['accuracy_refinement']` (`solve_loop.refine_accuracy`): the
  out-of-sample error of the first and the last round that measured new schedules, and the
  largest mean error of the rounds between them (not always falling round by round)."""
  rounds = [r for r in ref["rounds"] if r["num_schedules"]]
  unscored = sum(r.get("unscored", 0) for r in ref["rounds"])
  head = (f"accuracy model corrected from measurements in "
          f"{counted(len(ref['rounds']) - 1, 'round')}"
          f" ({'converged' if ref['converged'] else 'not converged'}, "
          f"{ref['measured_schedules']} schedules measured by then, the unpruned one among "
          "them" + (f"; {counted(unscored, 'schedule')} the estimate had measured, the model's "
                    "own table, not scored" if unscored else "") + ")")
  if not rounds:
    return head + ": no frontier schedule beyond those measured before"
  first, last = rounds[0], rounds[-1]

  def err(r):
    return (f"{r['mean_abs_points']:.2f} (max {r['max_abs_points']:.2f}) points on "
            f"{r['num_schedules']} schedules")

  def pair(key=None):
    one = (lambda r: r) if key is None else (lambda r: r[key])
    return (f"{err(one(first))} in round {first['round']}"
            + ("" if last is first else f" and {err(one(last))} in round {last['round']}"))

  between = rounds[1:-1]
  worst = max(between, key=lambda r: r["mean_abs_points"]) if between else None
  return (head + f": predicted before measuring, it erred by {pair()}"
          + ("" if worst is None else
             f" (rounds between: up to {err(worst)} in round {worst['round']})")
          + (f"; the anchored per-image prediction by {pair('anchored')}"
             if "anchored" in first and "anchored" in last else ""))
