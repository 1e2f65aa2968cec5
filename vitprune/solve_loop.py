"""Choosing on measurements: a `Solution`'s candidates measured on the data and timed as
compiled graphs, and the choice made again on those measurements (no files; the caller's
callbacks measure: `Evaluator` on images, `Timer` on the device).

  accuracy (`measure_frontier`, `check_floor`): each candidate's measured metric with its Wilson
    95 % interval over the images (`floor_status`; with a floor met with confidence, the paired
    interval of its change against the unpruned graph); the floor means the MEASURED metric
    meets it (`FloorNotMetError` when nothing measured does).
  the accuracy model corrected where the solver goes (`refine_accuracy`): frontier schedules
    measured round by round and the combination model refitted on them.
  in the loop (`check_in_loop`): the choice and its neighbours (frontier or measured) meeting the
    floor on measured accuracy are compiled and timed in one shuffled measurement (`Timer`) and
    the fastest measured one is chosen. With a latency budget instead (`check_budget_in_loop`):
    the choice and its neighbours are measured (accuracy and latency) and the most accurate one
    MEASURED within the budget is chosen (`BudgetNotMetError` when none is).

`vitprune.solve_stage.solve_multilayer` calls these when given an evaluator; the main job
(`vitprune.pipeline`) and `experiments.solve` time in the loop.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitprune import schedule as schedule_lib
from vitprune import solve
from vitprune.config import check_switch
from vitprune.intervals import change_interval, wilson_interval
from vitprune.records.estimate import Estimate
from vitprune.records.solution import (Candidate, Solution, judges_paired_change,
                                       measured_interval, meets_measured_floor,
                                       reported_accuracy)
from vitprune.solve import SolveInputError

# Measures schedules on the data: a list of counts -> their metric values, same order. A floor
# met with confidence also calls it with paired=True -> (values, per schedule the images it and
# the unpruned graph both get right, the unpruned only, it only, neither).
Evaluator = Callable[[Sequence[Tuple[int, ...]]], Sequence[float]]
# Compiles and times schedules (one shuffled measurement): a list of counts -> median seconds
# (`MeasuredSeconds` where the spread is known too).
Timer = Callable[[Sequence[Tuple[int, ...]]], Sequence[float]]
# Per-example top-1 margins {counts: [M]} (`refine_accuracy`), or a function that measures them.
Margins = Union[Dict[Tuple[int, ...], np.ndarray], Callable[[], Dict[Tuple[int, ...], np.ndarray]]]


class MeasuredSeconds(float):
  """A median in seconds that carries its measurement's IQR (`iqr`, seconds): what a `Timer`
  returns where it knows the spread, recorded as `measured_latency_iqr_s` (a choice 0.7 %
  faster than the next said nothing of whether the timing could tell them apart)."""
  iqr: float

  def __new__(cls, median: float, iqr: float) -> "MeasuredSeconds":
    obj = super().__new__(cls, median)
    obj.iqr = float(iqr)
    return obj

  def __getnewargs__(self):       # (copy and pickle: float's passes the median alone)
    return float(self), self.iqr


def with_measured(c: Candidate, value: float, num_images: Optional[int],
                  pair: Optional[Sequence[int]] = None, full: Optional[Candidate] = None,
                  metric: str = "accuracy") -> Candidate:
  """`c` with its measured metric and, given the number of images, its Wilson interval; with
  `pair` (images both graphs get right, lost, gained, both wrong, against the unpruned graph
  `full`) also the interval of its change against it (`change_interval` for `metric`)."""
  if pair is not None:
    c = _with_change(c, value, num_images, pair, full, metric)
  value = float(value)
  if num_images is None or not 0.0 <= value <= 1.0:
    return dataclasses.replace(c, measured_accuracy=value)
  n = int(num_images)
  k = round(value * n)
  if abs(value * n - k) > n * 2.0 ** -22:      # float32 rounding of k / n is tolerated
    raise ValueError(f"the evaluator measured {value!r} for {c.schedule}, which is not a count "
                     f"of {n} images (k / {n}): it evaluated other images than the estimate's, "
                     "or averaged something else")
  value = k / n                                  # exactly what the readers check
  lo, hi = wilson_interval(value, int(num_images))
  return dataclasses.replace(c, measured_accuracy=value, measured_accuracy_low=lo,
                             measured_accuracy_high=hi, num_images=int(num_images))


def _with_change(c: Candidate, value: float, num_images: Optional[int], pair: Sequence[int],
                 full: Optional[Candidate], metric: str) -> Candidate:
  """`c` with the paired interval of its change against the unpruned graph `full`. The
  evaluator's unpruned graph must measure what `full` says (the estimate's measurement, which
  a drop's floor is relative to): else the change and the floor would judge against two
  different unpruned numbers (SolveInputError)."""
  both_right, lost, gained, both_wrong = (int(v) for v in pair)
  n = both_right + lost + gained + both_wrong
  if num_images is not None and n != int(num_images):
    raise ValueError(f"the evaluator compared {c.schedule} with the unpruned graph on {n} "
                     f"images, not the {num_images} it measured")
  if abs((both_right + gained) / n - float(value)) > 2.0 ** -20:
    raise ValueError(f"the evaluator measured {value!r} for {c.schedule} but its per-image "
                     f"comparison counts {both_right + gained} of {n} images right")
  # (`full.predicted_accuracy`: the estimate's measurement, which the floor is relative to; a
  # copy measured by this evaluator, after `measure_frontier`, would agree with itself)
  if full is not None and abs((both_right + lost) / n - full.predicted_accuracy) > 2.0 ** -20:
    raise SolveInputError(
        f"the evaluator's unpruned graph gets {both_right + lost} of {n} images right "
        f"({(both_right + lost) / n:.4f}), the estimate measured {full.predicted_accuracy:.4f} "
        "on the same images: a floor met with confidence compares every schedule with one unpruned "
        "measurement; measure the estimate with the evaluator's weights, dtype and batch size, "
        "or leave out the floor confidence")
  _, lo, hi = change_interval(pair, metric, identical=full is not None and c.counts == full.counts)
  return dataclasses.replace(c, measured_change_low=lo, measured_change_high=hi)


def floor_status(c: Candidate, floor: float, solution: Optional[Solution] = None
                 ) -> Optional[str]:
  """'meets' / 'fails' when the measured value and its whole interval are on one side of the
  floor, 'straddles' when the interval contains it (None: not measured); the interval is the
  one `solution`'s floor judges (`measured_interval`: a confident drop's is paired)."""
  interval = measured_interval(c, solution)
  return None if interval is None else interval_status(*interval, floor)


def _straddling(solution: Solution, checked: Sequence[Candidate], floor: float) -> List[str]:
  """The schedules of `checked`, and the unpruned one, whose 95 % interval contains the floor
  (`floor_status`); with a drop met with confidence only those measured against the unpruned
  graph image by image, judged by their paired interval as the choice was."""
  paired_only = judges_paired_change(solution.settings)
  # (the unpruned schedule whether timed or not: the main job left it out, not timing it in the
  # loop, where a staged solve timing it listed it, on the same measured interval; but not
  # against a floor set from its own measurement, --max_accuracy_drop, which it meets by
  # definition)
  relative = solution.settings.get("max_accuracy_drop") is not None
  unpruned = None if solution.full is None else solution.full.counts
  pool = [*checked, *([solution.full] if solution.full is not None else [])]
  return sorted({c.schedule for c in pool
                 if not (relative and c.counts == unpruned)
                 and (not paired_only or c.measured_change_low is not None)
                 and floor_status(c, floor, solution) == "straddles"})


def interval_status(low: float, high: float, floor: float) -> str:
  """'meets' / 'fails' when the interval [low, high] lies at or above / below the floor,
  'straddles' when it contains it."""
  if solve.meets_floor(low, floor):       # (up to float rounding, as the choice judges)
    return "meets"
  if not solve.meets_floor(high, floor):
    return "fails"
  return "straddles"


def _measure(evaluate: Evaluator, candidates: Sequence[Candidate], num_images: Optional[int],
             paired: bool = False, full: Optional[Candidate] = None,
             metric: str = "accuracy") -> List[Candidate]:
  """`candidates` with their metric measured by one `evaluate` call (Wilson interval for
  `num_images`), same order; other fields (e.g. a measured latency) are kept. `paired`: also
  the paired interval of each one's change against the unpruned graph (`evaluate(counts_list,
  paired=True)` -> (values, [(both right, lost, gained, both wrong), ...]); `full`: the
  unpruned schedule (its measured metric, which the evaluator's must equal); `metric`: the one
  `evaluate` measures)."""
  if not candidates:
    return []
  if paired and not _takes_paired(evaluate):
    raise SolveInputError("a floor met with confidence compares each schedule with the "
                          "unpruned graph image by image: the evaluator must take "
                          "evaluate(counts_list, paired=True) (estimate.schedule_evaluator does)")
  counts = [c.counts for c in candidates]
  values, pairs = (evaluate(counts, paired=True) if paired else
                   (evaluate(counts), [None] * len(candidates)))
  values = solve.check_metrics("evaluate", values, counts)   # (one home: refine_frontier's too)
  if len(pairs) != len(candidates):
    raise ValueError(f"evaluate returned {len(pairs)} paired counts for {len(candidates)} "
                     "schedules")
  return [with_measured(c, v, num_images, pair, full=full, metric=metric)
          for c, v, pair in zip(candidates, values, pairs)]


def _takes_paired(evaluate: Evaluator) -> bool:
  try:
    params = inspect.signature(evaluate).parameters.values()
  except (TypeError, ValueError):       # (a builtin: assume it does)
    return True
  return any(p.name == "paired" or p.kind == p.VAR_KEYWORD for p in params)


def _remeasured(pool: Dict[Tuple[int, ...], Candidate], c: Candidate) -> Candidate:
  """`c` as `pool` holds it where the evaluator measured it there, else `c`."""
  known = pool.get(c.counts)
  return c if known is None or known.measured_accuracy is None else known


def _unmeasured(c: Candidate, paired: bool) -> bool:
  """Whether `c` still needs `_measure` (its metric, or with `paired` its change)."""
  return c.measured_accuracy is None or (paired and c.measured_change_low is None)


def _accuracy(c: Candidate) -> float:
  """What a choice compares with a floor: the measured metric when there is one, else the
  predicted one."""
  return c.predicted_accuracy if c.measured_accuracy is None else c.measured_accuracy


def num_images_of(estimate: Optional[Estimate], num_images: Optional[int]) -> Optional[int]:
  """The number of images schedules are measured on: `num_images` when given, else the
  estimate's (None: neither says)."""
  if num_images is not None:
    return int(num_images)
  if estimate is None:
    return None
  n = estimate.reference.get("num_examples")
  return int(n) if n is not None else None


def _error_points(pairs: Sequence[Tuple[float, float]]) -> Dict[str, Any]:
  """(predicted, measured) pairs -> {"num_schedules", "mean_abs_points", "max_abs_points",
  "mean_signed_points"} (predicted - measured, in points; zeros for no pair)."""
  err = 100 * np.array([p - m for p, m in pairs], np.float64)
  if not err.size:
    return {"num_schedules": 0, "mean_abs_points": 0.0, "max_abs_points": 0.0,
            "mean_signed_points": 0.0}
  return {"num_schedules": int(err.size), "mean_abs_points": float(np.abs(err).mean()),
          "max_abs_points": float(np.abs(err).max()), "mean_signed_points": float(err.mean())}


def measure_frontier(solution: Solution, evaluate: Evaluator, *,
                     num_images: Optional[int] = None,
                     measured_before: Iterable[Tuple[int, ...]] = ()) -> Solution:
  """Every frontier schedule measured on the data (one `evaluate` call for those not measured
  yet) -> the solution with each of them in `checked` (measured metric, Wilson interval for
  `num_images`) and `settings['frontier_accuracy_error']`: the combination model's error on
  its own frontier, in points (predicted - measured: mean |e|, max |e|, mean signed), leaving
  out the frontier schedules in `measured_before` (those the model was built from, as
  `refine_accuracy`'s: in sample, error about 0), whose number it records as "unscored". `chosen`
  and `full` are measured too (`full` already is: the estimate's measurement) and replaced by
  their measured copies, both in `checked`. The frontier's predictions
  stay as they were (a diagnostic of the model); a choice made after this (`check_floor`) uses
  the measured values."""
  if not solution.frontier:
    raise ValueError("the solution has no frontier to measure")
  known = {c.counts: c for c in solution.checked}
  own = [c for c in (solution.chosen, solution.full) if c is not None]
  todo = list({p.counts: known.get(p.counts, p) for p in list(solution.frontier) + own
               if known.get(p.counts, p).measured_accuracy is None}.values())
  for c in _measure(evaluate, todo, num_images):
    known[c.counts] = c
  for c in own:             # (the unpruned one as the estimate measured it: a candidate too)
    if c.measured_accuracy is not None:
      known.setdefault(c.counts, c)
  in_sample = {tuple(c) for c in measured_before}
  scored = [p for p in solution.frontier if p.counts not in in_sample]
  error = _error_points([(p.predicted_accuracy, known[p.counts].measured_accuracy)
                         for p in scored])
  if len(scored) < len(solution.frontier):
    error["unscored"] = len(solution.frontier) - len(scored)
  settings = dict(solution.settings, frontier_accuracy_error=error)
  full = solution.full
  checked = tuple(sorted(known.values(), key=lambda p: p.predicted_latency_s))
  return dataclasses.replace(
      solution, checked=checked, settings=settings, chosen=known[solution.chosen.counts],
      full=None if full is None else known[full.counts])


def margin_table(model: solve.CostModel, margins: Dict[Tuple[int, ...], np.ndarray]
                 ) -> Optional[solve.MarginTable]:
  """`solve.MarginTable` on `model`'s grid from {counts: [M] margins} of the unpruned schedule
  and of every single reduction the model may make (a block that never reduces needs none), or
  None when one of them is missing."""
  n_full, depth = model.num_tokens, model.depth
  ref = margins.get(schedule_lib.embed_counts(n_full, depth))
  if ref is None:
    return None
  rows = []
  for l in range(depth):
    row = []
    for n in model.ns[:-1]:
      m = (margins.get(schedule_lib.layer_counts(n_full, int(n), depth, l))
           if model.can_reduce[l] else ref)
      if m is None:
        return None
      row.append(m)
    rows.append(row)
  return solve.MarginTable.build(model.ns, ref, np.asarray(rows, np.float64))


def remeasure_margins(estimate: Estimate, evaluate: Evaluator, metric: Optional[str] = None
                      ) -> Tuple[Dict[Tuple[int, ...], np.ndarray], List[str]]:
  """{counts: [M] per-example top-1 margins} of the unpruned schedule and of every single
  reduction `estimate` measured (its block rows), measured again with `evaluate(...,
  margins=True)` on the estimate's data: an estimate file keeps scores, not margins, and
  `margin_table` needs them. Also returns the schedules whose metric measured here differs from
  the record's (another device or batch size can round a logit the other way; the margins are
  then this run's). `metric`: the one `evaluate` measures (default: the estimate's default)."""
  cfg = estimate.config
  metric = estimate.metric(metric)
  points = [p for p in estimate.points if p.layer is not None]
  counts = [schedule_lib.embed_counts(cfg.num_tokens, cfg.depth)] + [p.counts for p in points]
  names = ["full"] + [p.schedule for p in points]
  recorded = [estimate.reference.get(metric)] + [p.scores.get(metric) for p in points]
  values, margins = evaluate(counts, margins=True)
  differ = [name for name, v, r in zip(names, values, recorded) if abs(float(v) - float(r)) > 1e-9]
  return dict(zip(counts, margins)), differ


def refine_accuracy(solution: Solution, model: solve.CostModel, evaluate: Evaluator, *,
                    rounds: int = 4, num_images: Optional[int] = None,
                    margins: Optional[Margins] = None,
                    measured_before: Iterable[Tuple[int, ...]] = ()
                    ) -> Tuple[Solution, solve.CostModel]:
  """The solution on the frontier of an accuracy model corrected from measurements
  (`solve.refine_frontier`: measure the frontier, fit the drop correction, re-solve, measure
  what is new, until nothing is new or after `rounds` corrections).

  `settings["accuracy_refinement"]`: "rounds", per round the frontier size, the number of
  measured multi-layer schedules the correction was fitted on and the error (points) of the
  schedules it measured, predicted BEFORE they were measured (out of sample: the honest figure);
  "final_frontier": the final frontier's error under the final model (in sample when
  "converged": the model was fitted on all of them); "uncorrected_frontier": what
  `measure_frontier` reported before, when it ran. With `margins` ({counts: [M]}: the
  unpruned schedule and the single reductions, see `margin_table`, plus any schedule measured
  before, e.g. by `measure_frontier`) every round also has "anchored": the error of
  `solve.anchored_accuracy` on the same schedules, predicted before measuring them from the
  schedules measured before (those of `solution.checked` that `margins` holds, and the earlier
  rounds'; or a function returning them, called here, when they are first needed: e.g.
  `remeasure_margins`, after every input check); `evaluate` must then take `margins=True`.
  Margins that miss a single reduction of
  the grid leave "anchored" out ("anchored_skipped" says why). `measured_before`: schedules
  whose metric the model was built from (the estimate's: the single reductions, the unpruned
  one), measured again where a frontier holds them but not scored as predictions (in sample:
  a probe's round 0 held 14 among 25); a round says how many it left out ("unscored").
  Returns (solution, corrected model): the final frontier (every schedule measured), every
  measured schedule in `checked`, all with the final model's predicted accuracy; `chosen`
  re-chosen with the solution's criterion among ALL measured schedules on their measured metric
  (an infeasible floor or budget keeps the unpruned schedule, which `check_floor` then refuses
  as FloorNotMetError); `full` measured. Pass the model
  on to `check_floor`.
  """
  cfg, st = solution.config, dict(solution.settings)
  images = num_images if num_images is not None else st.get("num_images")
  known: Dict[Tuple[int, ...], Candidate] = {
      c.counts: c for c in solution.checked if c.measured_accuracy is not None}
  if callable(margins):
    margins = margins()
  table = None if margins is None else margin_table(model, margins)
  anchors = None if table is None else {c: margins[c] for c in known if c in margins}
  ref = solve.refine_frontier(model, evaluate, rounds=rounds, measured={
      c: p.measured_accuracy for c, p in known.items()}, table=table, anchors=anchors)
  in_sample = {tuple(c) for c in measured_before}
  history = []
  for r in ref.rounds:
    for p in r.new:
      known[p.counts] = with_measured(Candidate.predicted(cfg, p.counts, p.latency, p.accuracy),
                                      ref.measured[p.counts], images)
    scored = [i for i, p in enumerate(r.new) if p.counts not in in_sample]
    row = dict(_error_points([(r.new[i].accuracy, ref.measured[r.new[i].counts])
                              for i in scored]),
               round=r.index, frontier=r.frontier_size, fitted_on=r.fitted_on)
    if len(scored) < len(r.new):
      row["unscored"] = len(r.new) - len(scored)
    if r.anchored is not None:
      row["anchored"] = _error_points([(r.anchored[i], ref.measured[r.new[i].counts])
                                       for i in scored])
    history.append(row)
  full = solution.full
  if full.counts not in known:
    known.update((c.counts, c) for c in _measure(evaluate, [full], images))
  # One model for every prediction in the solution: the final one.
  known = {c: dataclasses.replace(
      p, predicted_accuracy=reported_accuracy(solve.predict_schedule(ref.model, c)[1]))
           for c, p in known.items()}
  frontier = tuple(known[p.counts] for p in ref.frontier)
  full = known[full.counts]
  chosen = _choose_measured(list(known.values()), st, full)
  refinement = {"rounds": history, "converged": ref.converged, "measured_schedules": len(known),
                "final_frontier": _error_points([(c.predicted_accuracy, c.measured_accuracy)
                                                 for c in frontier])}
  if "frontier_accuracy_error" in st:      # measure_frontier's figure: the uncorrected frontier
    refinement["uncorrected_frontier"] = st.pop("frontier_accuracy_error")
  if margins is not None and table is None:      # a report, not a reason to fail the job
    refinement["anchored_skipped"] = ("the per-example margins do not cover the unpruned "
                                      "schedule and every single reduction on the grid")
  st.update(num_images=images, accuracy_refinement=refinement)
  checked = tuple(sorted(known.values(), key=lambda p: p.predicted_latency_s))
  return dataclasses.replace(solution, frontier=frontier, chosen=chosen, full=full,
                             checked=checked, basis="measured", settings=st), ref.model


def _candidate_pool(solution: Solution, known: Dict[Tuple[int, ...], Candidate]
                    ) -> Dict[Tuple[int, ...], Candidate]:
  """What a floor check may choose from: every frontier schedule (as measured, where `known`
  has it) and every schedule of `known` measured off the frontier (`measure_frontier`,
  `refine_accuracy`), the unpruned one only when on the frontier."""
  unpruned = None if solution.full is None else solution.full.counts
  pool = {p.counts: known.get(p.counts, p) for p in solution.frontier}
  pool.update((c, p) for c, p in known.items()
              if p.measured_accuracy is not None and c != unpruned)
  return pool


def _checked_model_error(settings: Dict[str, Any], checked: Sequence[Candidate]
                         ) -> Optional[Dict[str, Any]]:
  """The combined accuracy model's error (`_error_points`, predicted - measured, points) on the
  measured schedules of `checked` that reduce in more than one block (a single reduction is a
  point of the sensitivity table, reproduced exactly), each predicted before it was measured;
  None without one, or for a refined solution (its predictions were fitted to these
  measurements: `settings["accuracy_refinement"]` reports their error before measuring)."""
  if "accuracy_refinement" in settings:
    return None
  pairs = [(c.predicted_accuracy, c.measured_accuracy) for c in checked
           if c.measured_accuracy is not None and solve.is_multi_reduction(c.counts)]
  return _error_points(pairs) if pairs else None


class FloorNotMetError(ValueError):
  """No schedule checked, the unpruned one included, meets the accuracy floor on measurement."""


def _check_floor_met(best: Candidate, checked: Sequence[Candidate], floor: float,
                     images: Optional[int], solution: Solution,
                     singles: Optional[Dict[Tuple[int, ...], float]] = None) -> None:
  """FloorNotMetError when `best` (after the search: the unpruned schedule when nothing met the
  floor) measures below it, naming the best of the other measured schedules (`checked` and the
  estimate's single reductions `singles`): such a choice was written as
  'accuracy_floor_measured' with exit 0 and no word that the floor was missed. With
  `settings.floor_confidence` the floor is met only by a whole 95 % interval
  (`meets_measured_floor`)."""
  if meets_measured_floor(best, solution.settings):      # (`floor` is the settings' floor)
    return
  if solution.settings.get("floor_confidence"):
    lo, hi = best.measured_accuracy_low, best.measured_accuracy_high
    raise FloorNotMetError(
        f"accuracy floor {floor:.6g} is not met with 95% confidence: "
        + ("the unpruned schedule" if solution.full is not None and
           best.counts == solution.full.counts else best.schedule)
        + f" measures {best.measured_accuracy:.4f}"
        + (f" (95% interval {lo:.4f}..{hi:.4f} on {images} images)" if lo is not None else "")
        + ", and no schedule measured has its whole interval above the floor; lower the floor, "
        "evaluate on more images, or choose on the measured values (no floor_confidence)")
  others = {c.counts: (c.measured_accuracy, c.schedule) for c in checked
            if c.measured_accuracy is not None}
  for counts, value in (singles or {}).items():
    others.setdefault(counts, (value, schedule_lib.format_schedule(
        schedule_lib.Schedule(counts), solution.config)))
  others.pop(best.counts, None)
  top = max(others.values(), default=None)
  unpruned = solution.full is not None and best.counts == solution.full.counts
  raise FloorNotMetError(
      f"accuracy floor {floor:.6g} is not met on measurement: "
      f"{'the unpruned schedule' if unpruned else best.schedule} measures "
      f"{best.measured_accuracy:.4f}" + (f" on {images} images" if images else "")
      + (f", the best of the {len(others)} other schedules measured {top[0]:.4f} ({top[1]})"
         if top else "") + "; lower the floor")


def check_floor(solution: Solution, estimate: Estimate, model: solve.CostModel,
                evaluate: Evaluator, chunk: int = 6, num_images: Optional[int] = None,
                neighbours: Optional[int] = None) -> Solution:
  """The fastest schedule whose *measured* metric meets the solution's accuracy floor.

  The combined accuracy model can be optimistic when several layers reduce. Two sources of
  measured candidates:
    * single-reduction schedules: the estimate already measured each one (S[l, n], same data);
    * frontier schedules, and schedules measured before off the frontier (`solution.checked`,
      e.g. by `refine_accuracy`; the unpruned schedule only when on the frontier), predicted
      faster than the best of those that meet the floor, on their measured metric when already
      measured (the same data is assumed), else on their prediction: the unmeasured ones are
      measured with `evaluate`, `chunk` per call, fastest first, until one meets it.
  The floor means the MEASURED metric meets it. Every measured candidate carries its Wilson 95 %
  interval for `num_images` evaluated images (default: the estimate's reference count);
  `settings['floor_straddles']` lists the checked schedules (and the unpruned one) whose
  interval contains the floor (`_straddling`).
  Returns the solution with `chosen` (its measured metric filled in), `checked` (the schedules
  measured before and here, by predicted latency; the interval and model-error diagnostics use
  them all; with `neighbours`, the in-loop timing's, also the estimate's single reductions
  meeting the floor it may take as neighbours of the choice: up to `neighbours` on each side)
  and `basis="measured"`; criterion "accuracy_floor_measured". FloorNotMetError when nothing
  checked meets the floor, the unpruned schedule included.
  """
  cfg, metric = solution.config, solution.metric
  floor = solution.settings["accuracy_floor"]
  confident = bool(solution.settings.get("floor_confidence"))
  images = num_images_of(estimate, num_images)
  if confident and images is None:
    raise SolveInputError("a floor met with confidence needs the number of evaluated images "
                          "(num_images; the estimate records none)")
  measured = estimate.measured(metric)
  full = solution.full
  grid = {int(n) for n in model.ns}
  eligible = {c: v for c, v in measured.items()
              if c != full.counts and grid.issuperset(c)
              and c[0] == full.counts[0]}     # (not an after-embedding row: multi mode prunes
                                              # in blocks only)
  singles = sorted((solve.Plan(c, *solve.predict_schedule(model, c))
                    for c, v in eligible.items() if solve.meets_floor(v, floor)),
                   key=lambda p: p.latency)
  pool = _candidate_pool(solution, {c.counts: c for c in solution.checked})
  # ... as candidates on the estimate's measurement, fastest predicted first; one the evaluator
  # measured again (the frontier's measurement, the refinement) is taken on that measurement,
  # the one `checked` keeps, and only while it still meets the floor
  single_candidates = [with_measured(Candidate.predicted(cfg, p.counts, p.latency, p.accuracy),
                                     measured[p.counts], images) for p in singles]
  single_candidates = [c for c in (_remeasured(pool, c) for c in single_candidates)
                       if solve.meets_floor(c.measured_accuracy, floor)]
  if confident:
    # The estimate measured the single reductions, but not against the unpruned graph image by
    # image: they are candidates to measure so (the unpruned graph is the fallback), on their
    # measured metric (the monotone envelope may predict one below the floor that measured
    # above it: it was never measured, and the unpruned graph chosen instead).
    best = dataclasses.replace(with_measured(full, measured[full.counts], images),
                               measured_change_low=0.0, measured_change_high=0.0)
    for c in single_candidates:
      known = pool.get(c.counts)
      if known is None or known.measured_accuracy is None:
        pool[c.counts] = c if known is None else with_measured(known, measured[c.counts], images)
  else:
    best = (single_candidates[0] if single_candidates else _remeasured(
        {c.counts: c for c in solution.checked},
        with_measured(full, measured[full.counts], images)))
  # Schedules measured before, on the frontier or not, are candidates on their measurement.
  candidates = sorted((p for p in pool.values()
                       if p.predicted_latency_s < best.predicted_latency_s and
                       solve.meets_floor(_accuracy(p), floor)),
                      key=lambda p: p.predicted_latency_s)
  checked: List[Candidate] = []
  for start in range(0, len(candidates), chunk):
    batch = candidates[start:start + chunk]
    got = {c.counts: c for c in _measure(evaluate, [p for p in batch
                                                    if _unmeasured(p, confident)], images,
                                         paired=confident, full=full,
                                         metric=metric)}
    done = [got.get(p.counts, p) for p in batch]
    checked += done
    ok = [p for p in done if meets_measured_floor(p, solution.settings)]
    if ok:
      best = ok[0]
      break
  # The estimate's single reductions meeting the floor are measured schedules too: those the
  # in-loop timing may take as neighbours of the choice are listed, so that it does (it timed
  # the choice alone when the frontier held none meeting the floor beside it). Measurements
  # made here or before (the evaluator's) replace the estimate's.
  near = [] if not neighbours else _around(
      best, [c for c in single_candidates if c.counts != best.counts], neighbours)
  # (a single reduction the estimate measured is listed too: the chosen entry is a checked one)
  checked = list({c.counts: c for c in near + list(solution.checked) + checked
                  + [best]}.values())
  _check_floor_met(best, checked, floor, images, solution, eligible)
  settings = dict(solution.settings, singles_meeting_floor=len(singles), num_images=images,
                  floor_straddles=_straddling(solution, checked, floor))
  error = _checked_model_error(settings, checked)
  if error:
    settings["checked_accuracy_error"] = error
  checked.sort(key=lambda p: p.predicted_latency_s)
  return dataclasses.replace(solution, chosen=best, checked=tuple(checked), basis="measured",
                             criterion="accuracy_floor_measured", settings=settings,
                             full=_as_checked(solution.full, checked))


def _choose_measured(measured: Sequence[Candidate], settings: Dict[str, Any],
                     fallback: Candidate) -> Candidate:
  """`solve.choose` with the solution's criterion (floor, budget or utility) over candidates on
  their MEASURED metric and predicted latency; `fallback` (the unpruned schedule) when nothing
  meets the floor; with a budget no prediction is within, the one predicted fastest (a
  provisional choice, as `solve_stage.solve_multilayer` makes it: `check_budget_in_loop`
  decides on measured latency, and started from the slowest schedule it measured its
  neighbours only)."""
  try:
    pick, _ = solve.choose([solve.Plan(c.counts, c.predicted_latency_s, c.measured_accuracy)
                            for c in measured], accuracy_floor=settings.get("accuracy_floor"),
                           latency_budget=settings.get("latency_budget"),
                           alpha=settings.get("alpha", 0.5))
  except ValueError:
    if settings.get("latency_budget") is not None and measured:
      return min(measured, key=lambda c: c.predicted_latency_s)
    return fallback
  return {c.counts: c for c in measured}[pick.counts]


def choose_on_measurements(solution: Solution) -> Solution:
  """After `measure_frontier` without a floor: the budget or utility choice made again on the
  MEASURED metric of every measured schedule (latency still predicted), basis "measured"."""
  measured = [c for c in solution.checked if c.measured_accuracy is not None]
  if not measured:
    return solution
  return dataclasses.replace(solution, chosen=_choose_measured(measured, solution.settings,
                                                               solution.full or solution.chosen),
                             basis="measured")


def _around(chosen: Candidate, pool: Sequence[Candidate], neighbours: int
            ) -> List[Candidate]:
  """Up to `neighbours` schedules of `pool` on each side of `chosen` by predicted latency,
  nearest first: the predicted faster ones, then the slower ones."""
  at = chosen.predicted_latency_s
  faster = sorted((p for p in pool if p.predicted_latency_s <= at),
                  key=lambda p: -p.predicted_latency_s)[:neighbours]
  slower = sorted((p for p in pool if p.predicted_latency_s > at),
                  key=lambda p: p.predicted_latency_s)[:neighbours]
  return faster + slower


def _with_accuracy(evaluate: Evaluator, pool: Sequence[Candidate], images: Optional[int],
                   paired: bool = False, full: Optional[Candidate] = None,
                   metric: str = "accuracy") -> List[Candidate]:
  """`pool` with the metric measured (one `evaluate` call) where it is not yet (with `paired`:
  also the change against the unpruned graph, `_measure`), same order."""
  got = {c.counts: c for c in _measure(evaluate, [p for p in pool if _unmeasured(p, paired)],
                                       images, paired, full, metric)}
  return [got.get(p.counts, p) for p in pool]


def _with_latency(time_schedules: Timer, pool: Sequence[Candidate]) -> List[Candidate]:
  """`pool` with its latency measured: compiled graphs, ONE `time_schedules` call."""
  seconds = time_schedules([p.counts for p in pool])
  if len(seconds) != len(pool):
    raise ValueError(f"time_schedules returned {len(seconds)} latencies for {len(pool)} "
                     f"schedules")
  return [dataclasses.replace(p, measured_latency_s=float(t),
                              measured_latency_iqr_s=getattr(t, "iqr", None))
          for p, t in zip(pool, seconds)]


class BudgetNotMetError(ValueError):
  """No schedule checked in the loop measures within the latency budget."""


def check_budget_in_loop(solution: Solution, evaluate: Evaluator, time_schedules: Timer, *,
                         neighbours: int = 2, num_images: Optional[int] = None,
                         max_rounds: int = 3, time_unpruned: bool = False) -> Solution:
  """Measures a latency-budget choice in the loop: the most accurate schedule whose MEASURED
  latency is within `settings['latency_budget']`, on MEASURED accuracy.

  The choice, up to `neighbours` schedules on each side of it (predicted faster / slower: the
  latency model errs both ways) and the unpruned schedule when it is predicted within the budget
  or the slowest of those, from the frontier and every schedule already measured (the unpruned
  one also off the frontier), get their accuracy measured where missing (one `evaluate` call)
  and are timed together (ONE `time_schedules` call: compiled graphs, one shuffled measurement).
  When none of them measures within the budget, the aim is corrected by their measured /
  predicted ratio and the `neighbours` + 1 most accurate schedules predicted below
  `budget / ratio` (measured accuracy where known, e.g. with the frontier measured, else
  predicted; ties: the slower) (when none is predicted that fast, the fastest not timed yet)
  are measured the same way, up to `max_rounds` more times, with the `neighbours` (at least 1)
  most accurate predicted between that aim and the fastest predicted of the graphs timed: the
  ratio is a median of noisy timings, and a graph that measured just over the budget made the
  aim skip every schedule between (a main job gave up 54 points for a budget its first choice
  missed by 0.7 %).
  Ties in accuracy go to the faster graph.
  criterion "latency_budget_measured", basis "measured", `settings['latency_basis'] ==
  "measured"`, `settings['timed_rounds']`: the schedules timed per measurement.
  BudgetNotMetError when none measures within the budget (naming the fastest). With
  `time_unpruned` the unpruned schedule is timed in the first measurement whatever its
  prediction; once timed, it is timed again in each later one (`full.measured_latency_s`: of
  the measurement the choice came from).
  """
  check_switch("time_unpruned", time_unpruned)
  budget = solution.settings.get("latency_budget")
  if budget is None:
    raise ValueError("check_budget_in_loop needs a solution with a latency budget")
  images = num_images if num_images is not None else solution.settings.get("num_images")
  known: Dict[Tuple[int, ...], Candidate] = {c.counts: c for c in solution.checked}
  chosen = known.get(solution.chosen.counts, solution.chosen)
  pool_all = _candidate_pool(solution, known)
  if solution.full is not None:          # the most accurate of all, when the budget allows it
    pool_all.setdefault(solution.full.counts, known.get(solution.full.counts, solution.full))
  first = [chosen] + _around(chosen, [p for c, p in pool_all.items() if c != chosen.counts],
                             neighbours)
  full = None if solution.full is None else pool_all[solution.full.counts]
  reach = max([budget] + [p.predicted_latency_s for p in first])
  if full is not None and full not in first and (time_unpruned or
                                                 full.predicted_latency_s <= reach):
    first.append(full)             # (as likely to fit as the slowest checked: worth timing)
  timed: Dict[Tuple[int, ...], Candidate] = {}
  per_round: List[int] = []              # schedules timed per measurement
  # The unpruned graph, once timed, is timed again in every later round: the choice comes from
  # the last one (the loop stops at the first with a schedule within the budget), and its
  # speed-up over the unpruned graph is then of one measurement.
  again = [full] if full is not None and full in first else []

  def measure(pool: Sequence[Candidate]) -> None:
    if per_round:
      pool = list(pool) + [p for p in again if p not in pool]
    per_round.append(len(pool))
    for p in _with_latency(time_schedules, _with_accuracy(evaluate, pool, images)):
      timed[p.counts] = known[p.counts] = p

  measure(first)
  while (len(per_round) <= max_rounds and
         not any(p.measured_latency_s <= budget for p in timed.values())):
    ratio = float(np.median([p.measured_latency_s / p.predicted_latency_s
                             for p in timed.values()]))
    aim = budget / ratio
    # The most accurate below it (measured where known), not the slowest: those were beaten on
    # measured accuracy there.
    below = sorted((p for c, p in pool_all.items()
                    if c not in timed and p.predicted_latency_s <= aim),
                   key=lambda p: (-_accuracy(p), -p.predicted_latency_s))[:max(neighbours, 1) + 1]
    fastest = min(p.predicted_latency_s for p in timed.values())
    if not below:     # the aim is below every prediction: the fastest not timed yet (the
      below = sorted((p for c, p in pool_all.items()                  # ratio is a median of
                      if c not in timed and p.predicted_latency_s < fastest),  # other graphs')
                     key=lambda p: p.predicted_latency_s)[:max(neighbours, 1) + 1]
    between = sorted((p for c, p in pool_all.items() if c not in timed and p not in below
                      and aim < p.predicted_latency_s < fastest),
                     key=lambda p: (-_accuracy(p), -p.predicted_latency_s))[:max(neighbours, 1)]
    below = below + between
    if not below:
      break
    measure(below)
  within = [p for p in timed.values() if p.measured_latency_s <= budget]
  if not within:
    fastest = min(timed.values(), key=lambda p: p.measured_latency_s)
    raise BudgetNotMetError(
        f"latency budget {1e3 * budget:.4g} ms is not met on measurement: the fastest of the "
        f"{len(timed)} schedules timed, {fastest.schedule}, measures "
        f"{1e3 * fastest.measured_latency_s:.4g} ms (predicted "
        f"{1e3 * fastest.predicted_latency_s:.4g} ms); raise the budget")
  best = max(within, key=lambda p: (p.measured_accuracy, -p.measured_latency_s))
  checked = tuple(sorted(known.values(), key=lambda p: p.predicted_latency_s))
  return _timed_choice(solution, best, checked, "latency_budget_measured",
                       num_images=images, timed_in_loop=len(timed), timed_rounds=per_round)


def _timed_choice(solution: Solution, best: Candidate, checked: Tuple[Candidate, ...],
                  criterion: str, **settings: Any) -> Solution:
  """`solution` choosing `best` on measured latency and accuracy (the in-loop checks): every
  schedule `checked`, `settings` added, latency basis "measured", the model's error on the
  measured multi-layer schedules (`_checked_model_error`) recomputed."""
  settings = dict(solution.settings, **settings, latency_basis="measured")
  settings.pop("latency_untrusted", None)  # about a predicted latency: the choice is measured now
  settings.pop("budget_provisional", None)  # (decided now, on measured latency)
  error = _checked_model_error(settings, checked)
  if error:
    settings["checked_accuracy_error"] = error
  return dataclasses.replace(solution, chosen=best, checked=checked, basis="measured",
                             criterion=criterion, settings=settings,
                             full=_as_checked(solution.full, checked))


def _unpruned_candidate(solution: Solution, known: Dict[Tuple[int, ...], Candidate],
                        confident: bool) -> Optional[Candidate]:
  """The unpruned schedule as measured so far (the estimate's measurement, or a later one), its
  change against itself 0 where a paired floor judges it; None when the solution lists none."""
  if solution.full is None:
    return None
  full = known.get(solution.full.counts, solution.full)
  if (confident and judges_paired_change(solution.settings)
      and full.measured_change_low is None):
    full = dataclasses.replace(full, measured_change_low=0.0, measured_change_high=0.0)
  return full


def _as_checked(full: Optional[Candidate], checked: Sequence[Candidate]) -> Optional[Candidate]:
  """The unpruned entry as `checked` holds it, where it was measured or timed there (a probe:
  `full` said the unpruned graph was never timed while its checked entry, chosen, was)."""
  if full is None:
    return None
  return next((c for c in checked if c.counts == full.counts), full)


def check_in_loop(solution: Solution, estimate: Estimate, model: Optional[solve.CostModel],
                  evaluate: Evaluator, time_schedules: Timer, *, neighbours: int = 2,
                  num_images: Optional[int] = None, chunk: int = 6,
                  time_unpruned: bool = False) -> Solution:
  """Measures latency in the loop: the fastest MEASURED schedule that meets the floor on
  MEASURED accuracy.

  Needs `settings['accuracy_floor']`. If the solution's floor was not yet checked on the data,
  `check_floor` runs first (needs `model`, the DP's `solve.CostModel`). Then the chosen schedule
  and up to `neighbours` schedules on each side of it (predicted faster / slower), taken from the
  frontier and every schedule already measured (only those meeting the floor, on their measured
  accuracy where already measured, else on their prediction) get their accuracy measured where
  missing (one `evaluate` call) and, every schedule whose measured accuracy meets the floor,
  their latency in ONE call of `time_schedules`
  (compiled graphs, one shuffled measurement). The fastest measured one is chosen. Every
  schedule checked keeps predicted and measured latency and accuracy (`checked`); criterion
  "accuracy_floor_measured", basis "measured", `settings['latency_basis'] == "measured"`.
  FloorNotMetError when neither the chosen schedule nor a neighbour meets the floor on
  measurement. With `time_unpruned` the unpruned graph is timed in the same measurement
  (`full.measured_latency_s`: a speed-up of one measurement), a candidate like the others
  where it meets the floor (chosen when no pruned schedule measured faster; where it does not,
  e.g. its own interval does not clear a confident floor, it is timed, not chosen); the main job
  leaves it to its verify stage.
  """
  check_switch("time_unpruned", time_unpruned)
  floor = solution.settings.get("accuracy_floor")
  if floor is None:
    raise ValueError("check_in_loop needs a solution with an accuracy floor")
  if solution.basis != "measured" or solution.chosen.measured_accuracy is None:
    if model is None:
      raise ValueError("the floor was not checked yet: pass the DP's cost model")
    solution = check_floor(solution, estimate, model, evaluate, chunk=chunk,
                           num_images=num_images, neighbours=neighbours)
  images = (num_images if num_images is not None else solution.settings.get("num_images")
            if "num_images" in solution.settings else num_images_of(estimate, None))
  known: Dict[Tuple[int, ...], Candidate] = {c.counts: c for c in solution.checked}
  chosen = solution.chosen
  known[chosen.counts] = chosen
  confident = bool(solution.settings.get("floor_confidence"))

  def may_meet(p: Candidate) -> bool:
    """Measured as the floor needs: by its rule (an interval that does not clear a confident
    floor took a neighbour's slot, then was dropped untimed); else on its value so far."""
    if not _unmeasured(p, confident):
      return meets_measured_floor(p, solution.settings)
    return solve.meets_floor(_accuracy(p), floor)

  eligible = [p for c, p in _candidate_pool(solution, known).items()
              if c != chosen.counts and may_meet(p)]
  pool = _with_accuracy(evaluate, [known.get(p.counts, p)
                                   for p in _around(chosen, eligible, neighbours)], images,
                        paired=confident, metric=solution.metric,
                        full=solution.full)
  for p in pool:
    known[p.counts] = p
  timed = [p for p in [chosen] + pool if meets_measured_floor(p, solution.settings)]
  if not timed:        # (a measured choice below the floor, and no neighbour meets it either)
    _check_floor_met(chosen, list(known.values()), floor, images, solution)
  full = _unpruned_candidate(solution, known, confident) if time_unpruned else None
  beside = []                        # timed for the speed-up alone: not a candidate
  if full is not None and full.counts not in {p.counts for p in timed}:
    known[full.counts] = full
    (timed if meets_measured_floor(full, solution.settings) else beside).append(full)
  measured = _with_latency(time_schedules, timed + beside)
  for p in measured:
    known[p.counts] = p
  timed = measured[:len(timed)]
  best = min(timed, key=lambda p: (p.measured_latency_s, -sum(p.counts)))
  checked = tuple(sorted(known.values(), key=lambda p: p.predicted_latency_s))
  straddles = _straddling(solution, checked, floor)
  return _timed_choice(solution, best, checked, "accuracy_floor_measured", num_images=images,
                       floor_straddles=straddles, timed_in_loop=len(measured))
