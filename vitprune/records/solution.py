"""The solution record: the chosen token schedule, the frontier it came from, and what it rests on.

Built by `vitprune.solve_stage` from a `Profile` and an `Estimate`; read by `experiments.deploy`.
File (JSON, `format` "vitprune-solution", version 2, version 1 read too; `write_solution` /
`read_solution`):

  {"format", "version", "created", "mode": "paper" | "multi",
   "model": {"name", "config"},
   "profile": {"path", "sha256", "device_kind", "platform", "dtype", "batch_size",
               "latency_source": "measured" | "predicted_from_blocks" | "blocks" |
                                 "calibrated-graph" (multi mode with a
                                 vitprune.profile.latency_model.LatencyModel; its parameters and
                                 residuals are in settings["latency_model"])},
   "estimate": {"path", "sha256", "kind", "method", "metric", "layers", "eval_batch_size",
                "weights_sha256", "data_fingerprint", "method_kwargs" (the options the
                estimate's reducer ran with, e.g. random drop's seed; absent in older files;
                version 1's random drop drew each layer's own subset: "nested": false)},
   "settings": {...solver options...},
   "chosen": {candidate fields + "method" (reducer to deploy with), optional
              "method_options" (its options, where the estimate measured another method: paper
              mode's POMT, EViT, ... on a random-drop estimate; absent: the defaults or, in
              files before it, unsaid), "criterion", "basis"
              ("predicted": the choice rests on the solver's predictions; "measured": on the
              metric measured on the data), paper mode also "utility" and "schedule_latency_s"
              (the POMT schedule's per-block prediction, or null)},
   "full": candidate | null (the unpruned schedule; measured accuracy: the estimate's
           reference, on its images),
   "frontier": [candidate, ...] latency ascending (paper mode: the non-dominated (L(n), A(n))),
   "checked": [candidate, ...] schedules evaluated on the data while choosing (may be empty;
               with a multi-layer floor also the estimate's single reductions meeting it),
   paper mode only: "curve": {"tokens", "latency_s", "accuracy", "utility"}}

  candidate = {"schedule": compact text (vitprune.schedule.format_schedule), "counts": [...],
               "predicted_latency_s", "predicted_accuracy", optional "tokens" (paper: n),
               "measured_latency_s", "measured_accuracy" (null or absent: not measured),
               with a measured accuracy also "num_images" and its Wilson 95 % interval
               "measured_accuracy_low", "measured_accuracy_high" (absent in older files), and
               where measured against the unpruned graph image by image (a confident floor:
               settings.floor_confidence) the paired 95 % interval of the change, measured
               minus unpruned, "measured_change_low", "measured_change_high"; timed in the
               loop also "measured_latency_iqr_s", the spread of that timing}

"predicted_*" numbers come from the solver's models; "measured_*" ones from compiled graphs and
the data (a schedule the estimate measured exactly, the unpruned one, or in paper mode each
schedule pruned at the estimate's block, also carries that measurement; its latency there is
the uniform curve's, a prediction). `sha256` entries are digests of the canonical JSON of the
input records
(`vitprune.jsonio.canonical_sha256`), so they do not depend on how a file was indented. Files
written before `checked` / `basis` / `measured_*` / `num_images` existed load with those empty.
The reader checks the choice against the rest of the file: `chosen` is an entry of `frontier`,
`checked` or `full` with the same numbers (paper mode: the curve's point at chosen.tokens,
pruned at settings.layer), and a floor or budget criterion holds for the numbers it names.
Multi mode with an accuracy floor: the floor means the MEASURED metric meets it;
settings["floor_straddles"] lists the checked schedules and the unpruned one whose interval
contains the floor (the unpruned one not against a floor set from its own measurement). With
latency measured in the loop (`solve_loop.check_in_loop`) settings["latency_basis"] is
"measured": the choice is the fastest measured compiled graph among those meeting the floor;
otherwise (multi mode) "predicted", also where basis is "measured" (a choice on measured
accuracy and predicted latency, e.g. a utility after measuring the frontier; absent in files
before 2026-12-07: predicted). With a latency budget checked in the loop
(`solve_loop.check_budget_in_loop`) the criterion is "latency_budget_measured": the most
accurate schedule (measured) whose measured latency is within settings["latency_budget"];
before that check, a budget no prediction is within chose the fastest predicted schedule
provisionally (criterion "latency_budget", settings["budget_provisional"]).
settings["accuracy_refinement"] (`solve_loop.refine_accuracy`): the accuracy model corrected
from measured frontier schedules; "rounds": per round the frontier size, the schedules measured
and their error predicted before measurement (points; with the estimate's per-example margins
also "anchored": `solve.anchored_accuracy`'s), "converged", "measured_schedules",
"final_frontier" (the final frontier's error under the final model: in sample when converged)
and, when the frontier was measured first, "uncorrected_frontier". Every predicted accuracy of
such a solution is the final model's.
settings["checked_accuracy_error"] (when measured multi-layer schedules exist, unrefined): the
combined accuracy model's error on them, predicted before measuring ("num_schedules",
"mean_abs_points", "max_abs_points", "mean_signed_points": predicted - measured, points). A
solution written before this field may hold "accuracy_correction" (a least-squares scale of the
drops, fitted in sample, that made predictions away from its schedules worse): it is not read.
settings["frontier_accuracy_error"] (`--measure_frontier`, unrefined): the same figures on the
whole frontier, less the schedules the estimate had measured (in sample), counted as
"unscored" (since 2026-12-07; before, they were scored).
settings["retimed_counts"] (paper mode, the main job): the counts of highest utility timed again
with the unpruned graph and pooled into the profile's points before the choice
(`pipeline.retime_top_counts`); the curve and the profile digest are of the pooled profile.
settings["retimed_choices"] (with it, since 2026-12-07): n* after each re-timing round.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vitprune import atomic
from vitprune import jsonio
from vitprune import schedule as schedule_lib
from vitprune.config import (COMPUTE_DTYPES, ViTConfig, check_config_types, check_path,
                             config_from_dict, config_to_dict, is_method_name,
                             method_options_problem, not_a_method, record_method_kwargs,
                             record_option_defaults, same_method)
from vitprune.profile import latency_model as latency_model_lib
from vitprune.profile import records as profile_records
from vitprune.records.estimate import HIGHER_IS_BETTER, KINDS as ESTIMATE_KINDS
from vitprune import solve as solve_lib
from vitprune.solve import ACCURACY_MODELS, meets_floor

FORMAT = "vitprune-solution"
VERSION = 2
READ_VERSIONS = (1, 2)    # 2: random drop's `nested` option (1 ran it per layer: nested=False)
MODES = ("paper", "multi")
BASES = ("predicted", "measured")
# How a choice was made (`solve.choose`, `solve_loop.check_floor`, `check_budget_in_loop`: the
# last since 2026-12-04; a reader older than that refuses it as not in its CRITERIA).
CRITERIA = ("utility", "accuracy_floor", "latency_budget", "accuracy_floor_measured",
            "latency_budget_measured")
# settings["budget_provisional"] of a multi-mode budget choice no prediction was within (a
# library caller's solution before `check_budget_in_loop` decided on measured latency): the
# criterion is "latency_budget", the chosen schedule the fastest predicted, over the budget.
BUDGET_PROVISIONAL = ("no schedule is predicted within the latency budget: the fastest "
                      "predicted, provisional until measured (check_budget_in_loop)")
# Where the solver's latencies came from (`solve_stage`: a measured or block-predicted curve in
# paper mode, the per-block table or the calibrated whole-graph model in multi mode).
LATENCY_SOURCES = ("measured", "predicted_from_blocks", "blocks", "calibrated-graph")


class SolutionError(jsonio.FormatError):
  """A solution document or file that does not follow the format."""


def reported_accuracy(accuracy: float) -> float:
  """A predicted accuracy as reported: within [0, 1] (a raw, `--nomonotone` table can add up to
  more than 1: the edited estimate of a fault probe predicted 1.24; capped multi-reduction plans
  can sum their drops below 0; choices are the same either way, floors being in [0, 1])."""
  return min(max(float(accuracy), 0.0), 1.0)


def _opt_float(x: Any) -> Optional[float]:
  return None if x is None else float(x)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A schedule with the solver's predictions and, once checked, its measurements."""
  counts: Tuple[int, ...]
  schedule: str
  predicted_latency_s: float
  predicted_accuracy: float
  tokens: Optional[int] = None
  measured_latency_s: Optional[float] = None
  measured_accuracy: Optional[float] = None
  measured_accuracy_low: Optional[float] = None    # binomial (Wilson 95 %) interval of the
  measured_accuracy_high: Optional[float] = None   # measured metric over `num_images`
  num_images: Optional[int] = None
  measured_change_low: Optional[float] = None      # paired 95 % interval of the measured metric
  measured_change_high: Optional[float] = None     # minus the unpruned graph's, same images
  measured_latency_iqr_s: Optional[float] = None   # the spread of measured_latency_s's timing

  @classmethod
  def predicted(cls, cfg: ViTConfig, counts: Sequence[int], latency: float, accuracy: float,
                **extra) -> "Candidate":
    """Schedule `counts` of `cfg` with the solver's predictions (the accuracy as reported,
    `reported_accuracy`); `extra`: further fields (tokens, measurements)."""
    counts = tuple(int(c) for c in counts)
    return cls(counts=counts,
               schedule=schedule_lib.format_schedule(schedule_lib.Schedule(counts), cfg),
               predicted_latency_s=float(latency), predicted_accuracy=reported_accuracy(accuracy),
               **extra)

  def to_json(self) -> Dict[str, Any]:
    d = {"schedule": self.schedule, "counts": list(self.counts),
         "predicted_latency_s": self.predicted_latency_s,
         "predicted_accuracy": self.predicted_accuracy}
    if self.tokens is not None:
      d["tokens"] = self.tokens
    if self.measured_latency_s is not None or self.measured_accuracy is not None:
      d.update(measured_latency_s=self.measured_latency_s,
               measured_accuracy=self.measured_accuracy)
    if self.num_images is not None:
      d.update(measured_accuracy_low=self.measured_accuracy_low,
               measured_accuracy_high=self.measured_accuracy_high, num_images=self.num_images)
    if self.measured_change_low is not None:
      d.update(measured_change_low=self.measured_change_low,
               measured_change_high=self.measured_change_high)
    if self.measured_latency_iqr_s is not None:
      d["measured_latency_iqr_s"] = self.measured_latency_iqr_s
    return d

  @classmethod
  def from_json(cls, d: Any, where: str, cfg: ViTConfig) -> "Candidate":
    """`schedule` may be absent (version-1 files wrote none for "full"): formatted from
    `counts`."""
    jsonio.require(isinstance(d, dict), where, "must be an object", SolutionError)
    jsonio.require_keys(d, ("counts", "predicted_latency_s", "predicted_accuracy"),
                        where, SolutionError)
    counts = d["counts"]
    jsonio.require(isinstance(counts, list) and bool(counts) and
                   all(jsonio.is_int(c) for c in counts), where,
                   f"counts must be a non-empty list of ints, got {counts!r}", SolutionError)
    text = d.get("schedule")
    if text is None:
      try:
        text = schedule_lib.format_schedule(schedule_lib.Schedule(tuple(counts)), cfg)
      except (ValueError, TypeError) as e:
        raise SolutionError(f"{where}: counts {counts} is not a schedule of {cfg.name}: "
                            f"{e}") from None
    jsonio.require(isinstance(text, str), where, "schedule must be a string", SolutionError)
    try:
      parsed = schedule_lib.parse_schedule(cfg, text).counts
    except (ValueError, TypeError) as e:
      raise SolutionError(f"{where}: schedule {text!r} does not parse for {cfg.name}: "
                          f"{e}") from None
    jsonio.require(list(parsed) == list(counts), where,
                   f"schedule {text!r} is counts {list(parsed)}, not the counts {counts} "
                   "recorded with it (edited?)", SolutionError)
    for key in ("predicted_latency_s", "predicted_accuracy"):
      jsonio.require(jsonio.is_num(d[key]), where, f"{key} must be a finite number, got "
                     f"{d[key]!r}", SolutionError)
    for key in ("measured_latency_s", "measured_accuracy", "measured_accuracy_low",
                "measured_accuracy_high"):
      jsonio.require(d.get(key) is None or jsonio.is_num(d[key]), where,
                     f"{key} must be a finite number or null, got {d.get(key)!r}", SolutionError)
    low, high = d.get("measured_change_low"), d.get("measured_change_high")
    jsonio.require((low is None) == (high is None) and (low is None or (
        jsonio.is_num(low) and jsonio.is_num(high) and -1 <= low <= high <= 1 and
        d.get("num_images") is not None)), where,
        f"measured_change_low / measured_change_high must be numbers -1 <= low <= high <= 1 "
        f"measured on num_images images, or both null, got {low!r}, {high!r}", SolutionError)
    for key in ("tokens", "num_images"):
      jsonio.require(d.get(key) is None or jsonio.is_int(d[key]), where,
                     f"{key} must be an int, got {d.get(key)!r}", SolutionError)
    iqr = d.get("measured_latency_iqr_s")
    jsonio.require(iqr is None or (jsonio.is_num(iqr) and d.get("measured_latency_s") is not None),
                   where, f"measured_latency_iqr_s must be a finite number beside a "
                   f"measured_latency_s, or null, got {iqr!r}", SolutionError)
    for key in ("predicted_latency_s", "measured_latency_s", "measured_latency_iqr_s"):
      jsonio.require(d.get(key) is None or d[key] >= 0, where,
                     f"{key} must be >= 0 seconds, got {d.get(key)!r}", SolutionError)
    for key in ("measured_accuracy", "measured_accuracy_low", "measured_accuracy_high"):
      # (predicted accuracies are not checked: files written before they were reported within
      # [0, 1] hold e.g. 1.24 from a raw --nomonotone table)
      jsonio.require(d.get(key) is None or 0 <= d[key] <= 1, where,
                     f"{key} must be in [0, 1], got {d.get(key)!r}", SolutionError)
    low, high = d.get("measured_accuracy_low"), d.get("measured_accuracy_high")
    jsonio.require(low is None or high is None or low <= high, where,
                   f"measured_accuracy_low {low} is above measured_accuracy_high {high}",
                   SolutionError)
    n, acc = d.get("num_images"), d.get("measured_accuracy")
    if n is not None:
      jsonio.require(n > 0 and acc is not None, where, f"num_images {n} needs a measured_accuracy "
                     "over at least one image", SolutionError)
      jsonio.require(jsonio.is_share(acc, n), where, f"measured_accuracy {acc!r} is not a count "
                     f"of {n} images (k / {n})", SolutionError)
      low, high = d.get("measured_accuracy_low"), d.get("measured_accuracy_high")
      jsonio.require(low is not None and high is not None and low - 1e-12 <= acc <= high + 1e-12,
                     where,
                     f"the measured accuracy's interval [{low}, {high}] does not hold "
                     f"{acc}", SolutionError)
    return cls(tuple(counts), text, float(d["predicted_latency_s"]),
               float(d["predicted_accuracy"]), d.get("tokens"),
               _opt_float(d.get("measured_latency_s")), _opt_float(d.get("measured_accuracy")),
               _opt_float(d.get("measured_accuracy_low")),
               _opt_float(d.get("measured_accuracy_high")), d.get("num_images"),
               _opt_float(d.get("measured_change_low")),
               _opt_float(d.get("measured_change_high")),
               _opt_float(d.get("measured_latency_iqr_s")))


@dataclasses.dataclass(frozen=True)
class ProfileRef:
  """Which profile a solution used: its identity and the part of it that was read."""
  path: str
  sha256: str
  device_kind: str
  platform: str
  dtype: str
  batch_size: int
  latency_source: str

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EstimateRef:
  """Which estimate a solution used: its identity, metric and layers."""
  path: str
  sha256: str
  kind: str
  method: str
  metric: str
  layers: Tuple[Optional[int], ...]
  eval_batch_size: int
  weights_sha256: str
  data_fingerprint: Optional[str]
  method_kwargs: Optional[Dict[str, Any]] = None     # None: a file from before they were kept

  def to_json(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d["layers"] = list(self.layers)
    if self.method_kwargs is None:
      del d["method_kwargs"]
    return d


# Fields of the input references that must be positive integers; every other one but
# `layers`, `method_kwargs` and `data_fingerprint` (null when the data had none) must be a string.
_REF_COUNTS = ("batch_size", "eval_batch_size")
_REF_OPTIONAL = ("method_kwargs",)


def _check_choice(sol: "Solution", where: str) -> None:
  """What the choice claims, against itself: a known criterion, numeric settings, the unpruned
  schedule as `full`, and a floor met on measurement when the criterion says so."""
  def require(cond, msg):
    jsonio.require(cond, where, msg, SolutionError)
  require(sol.criterion in CRITERIA, f"chosen.criterion {sol.criterion!r} not in {CRITERIA}")
  confident = sol.settings.get("floor_confidence")
  require((confident is None or isinstance(confident, bool)) and (not confident or (
      sol.settings.get("accuracy_floor") is not None and
      sol.criterion == "accuracy_floor_measured")), f"settings.floor_confidence {confident!r} "
          "must be a bool, true only with settings.accuracy_floor and a floor met on "
          "measurement (criterion 'accuracy_floor_measured')")
  _check_settings(sol, require)
  _check_refs(sol, require)
  drop = sol.settings.get("max_accuracy_drop")
  if drop is not None:       # (solved with a drop: the floor sits that far below the unpruned)
    floor, full = sol.settings.get("accuracy_floor"), sol.full
    require(jsonio.is_num(drop) and 0 <= drop < 1 and jsonio.is_num(floor) and full is not None
            and abs(full.predicted_accuracy - drop - floor) <= 1e-9 and (floor > 0 or drop == 0),
            f"settings.max_accuracy_drop {drop!r} needs settings.accuracy_floor = the unpruned "
            f"schedule's accuracy minus it, above 0, got floor {floor!r} (edited?)")
    require(sol.criterion in ("accuracy_floor", "accuracy_floor_measured"),
            f"settings.max_accuracy_drop {drop!r} sets a floor, but the choice was made by "
            f"{sol.criterion!r} (edited?)")
  unpruned = schedule_lib.full_schedule(sol.config).counts
  require(sol.full is None or sol.full.counts == unpruned,
          f"full.counts {list(sol.full.counts) if sol.full else None} is not the unpruned "
          f"schedule {list(unpruned)} (edited?)")
  _check_chosen_is_listed(sol, require)
  _check_criterion_holds(sol, require, unpruned)
  if sol.criterion == "accuracy_floor_measured":
    floor, got = sol.settings.get("accuracy_floor"), sol.chosen.measured_accuracy
    require(floor is not None and got is not None and sol.basis == "measured",
            "criterion 'accuracy_floor_measured' needs settings.accuracy_floor, the chosen "
            "schedule's measured accuracy and basis 'measured' (edited?)")
    # (the unpruned schedule too: check_floor refuses a floor it misses, FloorNotMetError)
    require(meets_floor(got, floor),
            f"criterion 'accuracy_floor_measured', but the chosen {sol.chosen.schedule} "
            f"measured {got} < the floor {floor} (edited?)")
    require(meets_measured_floor(sol.chosen, sol.settings),
            f"settings.floor_confidence, but the chosen {sol.chosen.schedule}'s 95% interval "
            f"does not clear the floor (edited?)")
    # (a timed choice was chosen on its measured latency: without the setting, the check
    # that it is the fastest timed schedule meeting the floor was skipped)
    require(sol.chosen.measured_latency_s is None
            or sol.settings.get("latency_basis") == "measured",
            f"the chosen {sol.chosen.schedule} has a measured latency, but "
            "settings.latency_basis is not 'measured' (edited?)")
  if sol.criterion == "latency_budget_measured":
    _check_budget_measured(sol, require)
  elif sol.settings.get("latency_basis") == "measured":
    _check_fastest_measured(sol, require)


def _is_bool(v: Any) -> bool:
  return isinstance(v, bool)


def _count(lowest: int):
  return lambda v: jsonio.is_int(v) and v >= lowest


# The figures of an accuracy-model error summary (`solve_loop._error_points`).
ERROR_FIGURES = ("num_schedules", "mean_abs_points", "max_abs_points", "mean_signed_points")


def _error_summary(v: Any) -> bool:
  return (isinstance(v, dict) and all(jsonio.is_num(v.get(k)) for k in ERROR_FIGURES)
          and jsonio.is_int(v["num_schedules"]) and v["num_schedules"] >= 0
          and 0 <= v["mean_abs_points"] <= v["max_abs_points"] + 1e-9    # (a mean of equal
                                                                      # values: 1 ulp above)
          and ("unscored" not in v or (jsonio.is_int(v["unscored"]) and v["unscored"] >= 1)))


# What each solver setting a writer records may hold (null: not given); a key not listed (a
# later writer's, or an older one's such as "accuracy_correction") is kept unread.
_TOKEN_COUNTS = (lambda v: isinstance(v, list) and bool(v) and all(
    jsonio.is_int(n) and n >= 1 for n in v), "a list of token counts")
_SETTINGS = {
    "accuracy_floor": (lambda v: jsonio.is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "latency_budget": (lambda v: jsonio.is_num(v) and v > 0, "a number of seconds > 0"),
    "max_accuracy_drop": (lambda v: jsonio.is_num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "alpha": (lambda v: jsonio.is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "step_k": (lambda v: jsonio.is_num(v) and v >= 0, "a number >= 0"),
    "accuracy_model": (lambda v: v in ACCURACY_MODELS, f"one of {list(ACCURACY_MODELS)}"),
    "latency_basis": (lambda v: v in BASES, f"one of {list(BASES)}"),
    "monotone": (_is_bool, "a bool"), "step_bottoms_only": (_is_bool, "a bool"),
    "allow_batch_mismatch": (_is_bool, "a bool"),
    "num_images": (_count(1), "an integer >= 1"),
    "timed_in_loop": (_count(0), "an integer >= 0"),
    "singles_meeting_floor": (_count(0), "an integer >= 0"),
    "grid": (lambda v: isinstance(v, list) and bool(v) and all(jsonio.is_int(n) and n >= 1
                                                               for n in v)
             and all(a < b for a, b in zip(v, v[1:])), "an ascending list of token counts"),
    "floor_straddles": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                        "a list of schedules"),
    "latency_untrusted": (lambda v: isinstance(v, str), "a string"),
    "latency_model_untrusted": (lambda v: isinstance(v, str), "a string"),
    "budget_provisional": (lambda v: v == BUDGET_PROVISIONAL, repr(BUDGET_PROVISIONAL)),
    "unused_estimate_counts": _TOKEN_COUNTS,
    "interpolated_counts": _TOKEN_COUNTS,
    "capped_counts": _TOKEN_COUNTS,
    "retimed_counts": _TOKEN_COUNTS,
    "retimed_choices": _TOKEN_COUNTS,
    "checked_accuracy_error": (_error_summary, "an error summary (num_schedules, mean_abs_points"
                               " <= max_abs_points, mean_signed_points)"),
    "frontier_accuracy_error": (_error_summary, "an error summary (num_schedules, "
                                "mean_abs_points <= max_abs_points, mean_signed_points; "
                                "unscored >= 1 if given)"),
    "accuracy_refinement": (lambda v: isinstance(v, dict), "an object"),
    "latency_model": (lambda v: isinstance(v, dict), "an object"),
}


def _check_settings(sol: "Solution", require) -> None:
  """Every recorded solver setting holds what its writer records (`_SETTINGS`), the metric is
  the estimate's, every straddling schedule is a checked one (or the unpruned one), and the
  latency model's batch size, dtype and device are the profile's: the ones a deploy builds the
  graph for."""
  st = sol.settings
  for key, (ok, what) in _SETTINGS.items():
    value = st.get(key)
    require(value is None or ok(value), f"settings.{key} must be {what} or null, got {value!r}")
  require(st.get("metric", sol.metric) == sol.metric,
          f"settings.metric {st.get('metric')!r} but estimate.metric {sol.metric!r} (edited?)")
  grid = st.get("grid")
  require(grid is None or grid[-1] <= sol.config.num_tokens,
          f"settings.grid reaches {grid[-1] if grid else None} tokens, above the model's "
          f"{sol.config.num_tokens}")
  listed = {c.schedule for c in (*sol.checked, sol.chosen, *([sol.full] if sol.full else []))}
  stray = [s for s in st.get("floor_straddles") or [] if s not in listed]
  require(not stray, f"settings.floor_straddles names {stray[0] if stray else ''!r}, neither "
          "a checked schedule nor the unpruned one (edited?)")
  images = st.get("num_images")
  other = next((c for c in (*sol.checked, sol.chosen) if images is not None and
                c.num_images not in (None, images)), None)
  require(other is None, f"{other.schedule if other else ''} was measured on "
          f"{other.num_images if other else ''} images, but settings.num_images says every "
          f"schedule checked was measured on {images} (edited?)")
  lm = st.get("latency_model")
  require(lm is not None or sol.profile.latency_source != latency_model_lib.SOURCE,
          f"profile.latency_source is {latency_model_lib.SOURCE!r} but settings.latency_model "
          "is missing (edited?)")
  if lm is not None:
    problem = "params" in lm and latency_model_lib.params_problem(lm["params"])
    require(not problem, f"settings.latency_model.{problem} (edited?)")
    for key, own in (("batch_size", sol.profile.batch_size), ("dtype", sol.profile.dtype),
                     ("device_kind", sol.profile.device_kind)):
      require(lm.get(key, own) == own,
              f"settings.latency_model.{key} {lm.get(key)!r} but profile.{key} {own!r}: the "
              "latencies were measured for another graph than the one deployed (edited?)")


def _check_refs(sol: "Solution", require) -> None:
  """The input references: known latency source, sha256 digests, a named device, estimate
  layers that are blocks of the model, and distinct schedules on the frontier and checked."""
  p, e = sol.profile, sol.estimate
  require(p.latency_source in LATENCY_SOURCES,
          f"profile.latency_source {p.latency_source!r} not in {list(LATENCY_SOURCES)}")
  for name, value in (("profile.sha256", p.sha256), ("estimate.sha256", e.sha256),
                      ("estimate.weights_sha256", e.weights_sha256)):
    require(jsonio.is_sha256(value), f"{name} must be a sha256 hex digest, got {value!r}")
  require(e.data_fingerprint is None or jsonio.is_sha256(e.data_fingerprint),
          f"estimate.data_fingerprint must be a sha256 hex digest or null, got "
          f"{e.data_fingerprint!r}")
  require(bool(p.device_kind.strip()) and bool(p.platform.strip()),
          f"profile.device_kind and profile.platform must name the device, got "
          f"{p.device_kind!r}, {p.platform!r}")
  require(e.kind in ESTIMATE_KINDS, f"estimate.kind {e.kind!r} not in {list(ESTIMATE_KINDS)}")
  bad = [l for l in e.layers if l is not None and not 0 <= l < sol.config.depth]
  require(not bad, f"estimate.layers {list(e.layers)}: {bad[0] if bad else ''} is not a block "
          f"of the {sol.config.depth}-block model")
  for name, entries in (("frontier", sol.frontier), ("checked", sol.checked)):
    seen = set()
    for c in entries:
      require(c.counts not in seen, f"{name} lists {c.schedule} twice (edited?)")
      seen.add(c.counts)


def _check_budget_measured(sol: "Solution", require) -> None:
  """criterion 'latency_budget_measured' (`check_budget_in_loop`): the chosen schedule measured
  within the budget, and none timed within it measured more accurate."""
  c, budget = sol.chosen, sol.settings.get("latency_budget")
  require(budget is not None and sol.basis == "measured" and
          sol.settings.get("latency_basis") == "measured" and
          c.measured_latency_s is not None and c.measured_accuracy is not None,
          "criterion 'latency_budget_measured' needs settings.latency_budget, latency_basis "
          "'measured', basis 'measured' and the chosen schedule's measured latency and accuracy "
          "(edited?)")
  require(c.measured_latency_s <= budget,
          f"criterion 'latency_budget_measured', but the chosen {c.schedule} measured "
          f"{c.measured_latency_s} s > the budget {budget} s (edited?)")
  within = [e for e in sol.checked if e.measured_latency_s is not None and
            e.measured_accuracy is not None and e.measured_latency_s <= budget]
  best = max(within, key=lambda e: e.measured_accuracy, default=c)
  require(best.measured_accuracy <= c.measured_accuracy,
          f"criterion 'latency_budget_measured', but {best.schedule} measured "
          f"{best.measured_accuracy} within the budget, more than the chosen {c.schedule}'s "
          f"{c.measured_accuracy} (edited?)")


def _check_fastest_measured(sol: "Solution", require) -> None:
  """settings.latency_basis 'measured' (`check_in_loop`): the chosen schedule is the fastest
  of the timed ones (measured latency) that meet the floor on measured accuracy."""
  c, floor = sol.chosen, sol.settings.get("accuracy_floor")
  require(c.measured_latency_s is not None and c.measured_accuracy is not None,
          "settings.latency_basis is 'measured' but the chosen schedule has no measured "
          "latency and accuracy (edited?)")
  meeting = [e for e in sol.checked if e.measured_latency_s is not None and
             e.measured_accuracy is not None and
             (floor is None or meets_measured_floor(e, sol.settings))]
  faster = min(meeting, key=lambda e: e.measured_latency_s, default=c)
  require(c.measured_latency_s <= faster.measured_latency_s,
          f"settings.latency_basis is 'measured', but {faster.schedule} measured "
          f"{faster.measured_latency_s} s{'' if floor is None else ' and meets the floor'}, "
          f"faster than the chosen {c.schedule}'s {c.measured_latency_s} s (edited?)")


def _check_chosen_is_listed(sol: "Solution", require) -> None:
  """The chosen schedule is one the solution lists, with the same numbers: a frontier, checked
  or unpruned entry (multi mode), the curve's point at its token count, pruned at
  settings.layer (paper mode). A hand-edited choice deployed another graph under the numbers
  of the one chosen."""
  c = sol.chosen
  same = [e for e in (*sol.frontier, *sol.checked, sol.full) if e is not None and
          e.counts == c.counts]
  if sol.mode == "multi":     # (with the lists emptied, any schedule passed under any numbers)
    require(same, f"chosen {c.schedule} is none of the schedules the solution lists "
                  "(frontier, checked, full) (edited?)")
  unlisted = (c.measured_accuracy is not None or c.measured_latency_s is not None) and not any(
      e.measured_accuracy is not None or e.measured_latency_s is not None for e in same)
  respelled = [e.schedule for e in same if e.schedule != c.schedule and
               dataclasses.replace(e, tokens=c.tokens, schedule=c.schedule) == c]
  require(not respelled or _lists(same, c), f"chosen {c.schedule} is the entry the solution "
          f"lists as {respelled[0] if respelled else ''} (the same counts and numbers) under "
          "another schedule text (edited?)")
  require(not same or _lists(same, c), f"chosen {c.schedule}'s measurements are in no entry the "
          "solution lists for that schedule (written before 2026-12-04, when a measured choice "
          "was first listed in checked, or edited): solve again" if unlisted else
          f"chosen {c.schedule}'s numbers differ from those the solution lists for that "
          "schedule (edited?)")
  if sol.mode != "paper":     # (`_check_curve` ran: chosen.tokens is on the curve)
    return
  layer = sol.settings.get("layer")
  require(jsonio.is_int(layer) and 0 <= layer < sol.config.depth,
          f"settings.layer must be a block index in [0, {sol.config.depth}), got {layer!r}")
  expect = schedule_lib.layer_counts(sol.config.num_tokens, c.tokens, sol.config.depth, layer)
  require(c.counts == expect, f"chosen {c.schedule} is not the POMT schedule of chosen.tokens "
                              f"{c.tokens} at settings.layer {layer}: {list(expect)} (edited?)")
  for e in (*sol.frontier, *sol.checked):     # (an edited n on a listed entry passed)
    if e.tokens is not None:
      got = schedule_lib.layer_counts(sol.config.num_tokens, e.tokens, sol.config.depth, layer)
      require(e.counts == got, f"listed {e.schedule} is not the POMT schedule of its tokens "
                               f"{e.tokens} at settings.layer {layer}: {list(got)} (edited?)")
  i = sol.curve["tokens"].index(c.tokens)
  acc = sol.curve["accuracy"][i]            # (reported within [0, 1]: a raw table's 1.24 is 1.0)
  require(c.predicted_latency_s == sol.curve["latency_s"][i] and
          c.predicted_accuracy in (acc, min(max(acc, 0.0), 1.0)),
          f"chosen {c.schedule}'s predicted latency and accuracy are not the curve's at "
          f"{c.tokens} tokens (edited?)")
  _check_paper_argmax(sol, require)


def _check_paper_argmax(sol: "Solution", require) -> None:
  """A paper choice is the curve's utility argmax at settings.alpha (`solve.solve_paper`'s tie
  rule: the faster, then more tokens), and the utilities recorded are the curve's: the choice
  moved to another curve point (keep@3:10, U 0.54 against 0.64 at 40 tokens), or chosen.utility
  edited to 0.99, deployed without a word."""
  c, curve, alpha = sol.chosen, sol.curve, sol.settings.get("alpha")
  require(jsonio.is_num(alpha) and 0 <= alpha <= 1,
          f"settings.alpha must be a number in [0, 1], got {alpha!r}")
  try:
    u = solve_lib.utility(curve["latency_s"], curve["accuracy"], alpha)
  except ValueError as e:
    require(False, f"curve: {e}")
  require(all(abs(a - b) <= 1e-9 * max(1.0, abs(a)) for a, b in zip(u.tolist(),
                                                                     curve["utility"])),
          f"curve.utility is not U of its latency_s and accuracy at settings.alpha {alpha} "
          "(edited?)")
  j = solve_lib.utility_argmax(curve["tokens"], curve["latency_s"], u)
  require(c.tokens == curve["tokens"][j],
          f"chosen {c.schedule} ({c.tokens} tokens, U {u[curve['tokens'].index(c.tokens)]:.4f}) "
          f"is not the curve's utility argmax: {curve['tokens'][j]} tokens, U {u[j]:.4f} "
          "(edited?)")
  require(sol.utility is None or abs(sol.utility - u[j]) <= 1e-9 * max(1.0, abs(u[j])),
          f"chosen.utility {sol.utility} is not the curve's U {u[j]:.6g} at {c.tokens} tokens "
          "(edited?)")


def judges_paired_change(settings: Dict[str, Any]) -> bool:
  """Whether the floor is a maximum drop met with confidence (`settings.max_accuracy_drop`,
  `settings.floor_confidence`): judged by each schedule's paired 95 % interval of its change
  against the unpruned graph, not by an interval of its own metric."""
  return bool(settings.get("floor_confidence")) and settings.get("max_accuracy_drop") is not None


def meets_measured_floor(c: Candidate, settings: Dict[str, Any]) -> bool:
  """Whether measured candidate `c` meets the solution's floor (`settings.accuracy_floor`): its
  measured metric (up to float rounding, `meets_floor`), or with `settings.floor_confidence`
  its whole 95 % interval: with `settings.max_accuracy_drop` the paired interval of its change
  against the unpruned graph (`measured_change_low` >= -drop), else the Wilson interval
  (`measured_accuracy_low` >= floor). False when not measured so."""
  floor = settings.get("accuracy_floor")
  if c.measured_accuracy is None or floor is None:
    return False
  if not settings.get("floor_confidence"):
    return bool(meets_floor(c.measured_accuracy, floor))
  if judges_paired_change(settings):
    return c.measured_change_low is not None and bool(
        meets_floor(c.measured_change_low, -settings["max_accuracy_drop"]))
  return c.measured_accuracy_low is not None and bool(meets_floor(c.measured_accuracy_low, floor))


def pruned_meeting_floor(sol: "Solution") -> List[Candidate]:
  """The checked schedules other than the unpruned one that meet the floor on measurement
  (`meets_measured_floor`): none when the unpruned graph is chosen because nothing pruned
  meets it, some when it was chosen as the fastest measured graph that does."""
  unpruned = None if sol.full is None else sol.full.counts
  return [c for c in sol.checked
          if c.counts != unpruned and meets_measured_floor(c, sol.settings)]


def measured_interval(c: Candidate, sol: Optional["Solution"] = None
                      ) -> Optional[Tuple[float, float]]:
  """The 95 % interval of `c`'s measured metric that `sol`'s floor judges (None: not
  measured): for a drop met with confidence (`settings.max_accuracy_drop`,
  `settings.floor_confidence`) and `c` measured against the unpruned graph, the unpruned metric
  (the estimate's) plus the paired interval of the change; else the Wilson interval, or the
  measured value itself where none was recorded."""
  if c.measured_accuracy is None:
    return None
  if (sol is not None and judges_paired_change(sol.settings) and sol.full is not None
      and c.measured_change_low is not None):
    base = sol.full.predicted_accuracy
    return base + c.measured_change_low, base + c.measured_change_high
  lo = c.measured_accuracy if c.measured_accuracy_low is None else c.measured_accuracy_low
  hi = c.measured_accuracy if c.measured_accuracy_high is None else c.measured_accuracy_high
  return lo, hi


def _lists(same: List[Candidate], c: Candidate) -> bool:
  """Whether entries `same` (of c's counts) hold the chosen `c`: one equals it (`full` is
  written without tokens). (check_floor's files before 955fc9f, 2026-12-04, listed a measured
  choice only as its frontier entry without measurements: refused, as a hand-edited choice
  with measurements of its own is.)"""
  return any(dataclasses.replace(e, tokens=c.tokens) == c for e in same)


def _check_criterion_holds(sol: "Solution", require, unpruned) -> None:
  """A predicted floor or budget criterion holds for the chosen numbers it was made on (the
  unpruned schedule is the measured choices' fallback); paper mode chooses by utility."""
  c, crit = sol.chosen, sol.criterion
  require(sol.mode == "multi" or crit == "utility",
          f"chosen.criterion {crit!r} in paper mode, which chooses by 'utility' (edited?)")
  if sol.settings.get("budget_provisional") is not None:
    require(crit == "latency_budget" and sol.settings.get("latency_budget") is not None and
            bool(sol.frontier) and c.predicted_latency_s == min(
                p.predicted_latency_s for p in sol.frontier),
            "settings.budget_provisional needs criterion 'latency_budget', "
            "settings.latency_budget and the chosen schedule predicted fastest (edited?)")
  if crit not in ("accuracy_floor", "latency_budget"):      # (their settings are named so)
    return
  bound = sol.settings.get(crit)
  require(bound is not None, f"chosen.criterion {crit!r} needs settings.{crit} (edited?)")
  if c.counts == unpruned:
    return
  if crit == "latency_budget":
    if sol.settings.get("budget_provisional") is not None:
      require(all(p.predicted_latency_s > bound for p in sol.frontier),
              f"settings.budget_provisional, but a frontier schedule is predicted within the "
              f"budget {bound} s (edited?)")
      return
    require(c.predicted_latency_s <= bound,
            f"criterion 'latency_budget', but the chosen {c.schedule} is predicted "
            f"{c.predicted_latency_s} s > the budget {bound} s (edited?)")
    return
  measured = sol.basis == "measured" and c.measured_accuracy is not None
  got = c.measured_accuracy if measured else c.predicted_accuracy
  require(meets_floor(got, bound),
          f"criterion 'accuracy_floor', but the chosen {c.schedule} is "
          f"{'measured' if measured else 'predicted'} {got} < the floor {bound} (edited?)")


def _ref(cls, d: Any, where: str):
  jsonio.require(isinstance(d, dict), where, "must be an object", SolutionError)
  names = [f.name for f in dataclasses.fields(cls)]
  jsonio.require_keys(d, [n for n in names if n not in _REF_OPTIONAL], where, SolutionError)
  values = {k: d[k] for k in names if k in d}
  for k, v in values.items():
    if k == "method_kwargs":
      jsonio.require(isinstance(v, dict) and all(
          isinstance(o, str) and isinstance(v[o], (str, bool, int, float))
          for o in v), where, f"method_kwargs must be an object of option values, got {v!r}",
                     SolutionError)
    elif k in _REF_COUNTS:
      jsonio.require(jsonio.is_int(v) and v >= 1, where,
                     f"{k} must be a positive integer, got {v!r}", SolutionError)
    elif k == "layers":
      jsonio.require(isinstance(v, list) and all(l is None or jsonio.is_int(l) for l in v),
                     where, f"layers must be a list of ints or nulls, got {v!r}", SolutionError)
    elif k == "method":
      jsonio.require(is_method_name(v), where, not_a_method("method", v), SolutionError)
    elif k == "metric":     # (solve_stage.resolve_metric: higher is better; kl is not)
      jsonio.require(v in HIGHER_IS_BETTER, where, f"metric must be one of "
                     f"{list(HIGHER_IS_BETTER)}, got {v!r}", SolutionError)
    elif k == "dtype":
      jsonio.require(v in COMPUTE_DTYPES, where, f"dtype must be one of {list(COMPUTE_DTYPES)}, "
                     f"got {v!r}", SolutionError)
    elif not (k == "data_fingerprint" and v is None):
      jsonio.require(isinstance(v, str), where, f"{k} must be a string, got {v!r}",
                     SolutionError)
  if values.get("method_kwargs") is not None and "method" in values:
    problem = method_options_problem(values["method"], values["method_kwargs"])
    jsonio.require(not problem, where, f"method_kwargs: {problem}", SolutionError)
  if "layers" in values:
    values["layers"] = tuple(values["layers"])
  return cls(**values)


@dataclasses.dataclass(frozen=True)
class Solution:
  """A solver run: the choice, the alternatives, and the inputs it was made from."""
  mode: str
  config: ViTConfig
  profile: ProfileRef
  estimate: EstimateRef
  settings: Dict[str, Any]
  chosen: Candidate
  method: str
  criterion: str
  full: Optional[Candidate]
  frontier: Tuple[Candidate, ...]
  created: str
  basis: str = "predicted"
  checked: Tuple[Candidate, ...] = ()
  utility: Optional[float] = None                 # paper mode: U(n*)
  schedule_latency_s: Optional[float] = None      # paper mode: per-block prediction
  curve: Optional[Dict[str, List[float]]] = None  # paper mode: tokens/latency_s/accuracy/utility
  method_options: Optional[Dict[str, Any]] = None  # `method`'s options, unless the estimate's
  version: int = VERSION      # the format version its method_kwargs mean (`method_kwargs`)
  source: str = dataclasses.field(default="solution", compare=False)

  def __post_init__(self):
    if self.mode not in MODES:
      raise SolutionError(f"{self.source}: mode {self.mode!r} not in {MODES}")
    if self.basis not in BASES:
      raise SolutionError(f"{self.source}: basis {self.basis!r} not in {BASES}")
    if self.method_options is not None:
      problem = ("the estimate measured that method: its method_kwargs say them"
                 if self.estimate_measured_method else
                 method_options_problem(self.method, self.method_options))
      if problem:
        raise SolutionError(f"{self.source}: chosen.method_options: {problem}")

  @property
  def model(self) -> str:
    return self.config.name

  @property
  def metric(self) -> str:
    return self.estimate.metric

  @property
  def estimate_measured_method(self) -> bool:
    """Whether the estimate measured the chosen method itself (its options are then the
    estimate's), not random drop standing in for it (paper mode); names as readers take them."""
    return same_method(self.method, self.estimate.method)

  @property
  def method_kwargs(self) -> Optional[Dict[str, Any]]:
    """The options the chosen method's reducer was measured with: the estimate's when it
    measured that method (random drop's seed decides which tokens go), as this record's format
    version means them (`config.record_method_kwargs`); else `method_options` (paper mode's
    POMT, EViT, ... on a random-drop estimate, as chosen and verified). None when the file does
    not say them."""
    if not self.estimate_measured_method:
      return None if self.method_options is None else dict(self.method_options)
    return record_method_kwargs(self.method, self.estimate.method_kwargs, self.version)

  @property
  def method_option_defaults(self) -> Dict[str, Any]:
    """What this record's format version fixes of the chosen method's options even where
    `method_kwargs` says nothing (version 1: random drop drew per layer, nested=False); a
    reducer built for it takes these under any options given (`reducer_options`)."""
    return record_option_defaults(self.method, self.version)

  def reducer_options(self, given: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The options to rebuild the chosen method's reducer with: `method_kwargs` when the file
    says them, else `given` (e.g. --method_opts) over `method_option_defaults`."""
    said = self.method_kwargs
    if said is not None:
      return said
    return {**self.method_option_defaults, **(given or {})}

  @property
  def schedule(self) -> schedule_lib.Schedule:
    """The chosen schedule, checked against the model."""
    return schedule_lib.check_schedule(self.config, schedule_lib.Schedule(self.chosen.counts))

  @property
  def stem(self) -> str:
    """Default output file stem (`solution_stem`)."""
    return solution_stem(self.model, self.mode, self.profile.batch_size, self.profile.dtype,
                         self.profile.device_kind)

  def check_weights(self, weights_sha256: str, weights: str) -> None:
    """Raises ValueError unless this solution was estimated on the parameters whose
    `vitprune.digest.params_sha256` is `weights_sha256` (`weights` names them): a schedule
    chosen on other weights says nothing about their accuracy."""
    if self.estimate.weights_sha256 != weights_sha256:
      raise ValueError(f"the solver output {self.source} was estimated on other weights "
                       f"(sha256 {self.estimate.weights_sha256[:16]}...) than {weights} "
                       f"({weights_sha256[:16]}...): its accuracy says nothing about them")

  def provenance(self) -> Dict[str, Any]:
    """What a deployment records about this solution (no frontier, no curve; paper mode's
    chosen entry with its utility and per-block latency, as the file has them: its predicted
    latency is the uniform curve's at n*, which an artifact said nowhere)."""
    chosen = self.chosen.to_json()
    if self.mode == "paper":
      chosen.update(utility=self.utility, schedule_latency_s=self.schedule_latency_s)
    return {"path": self.source, "sha256": self.sha256(), "mode": self.mode,
            "created": self.created, "model": self.model, "basis": self.basis,
            "criterion": self.criterion, "settings": dict(self.settings),
            "profile": self.profile.to_json(), "estimate": self.estimate.to_json(),
            "chosen": chosen}

  def sha256(self) -> str:
    return jsonio.canonical_sha256(self.to_json())

  def to_json(self) -> Dict[str, Any]:
    chosen = self.chosen.to_json()
    chosen.update(method=self.method, criterion=self.criterion, basis=self.basis)
    if self.method_options is not None:
      chosen["method_options"] = dict(self.method_options)
    if self.mode == "paper":
      chosen.update(utility=self.utility, schedule_latency_s=self.schedule_latency_s)
    d = {"format": FORMAT, "version": self.version, "created": self.created, "mode": self.mode,
         "model": {"name": self.model, "config": config_to_dict(self.config)},
         "profile": self.profile.to_json(), "estimate": self.estimate.to_json(),
         "settings": dict(self.settings), "chosen": chosen,
         "full": None if self.full is None else self.full.to_json(),
         "frontier": [c.to_json() for c in self.frontier],
         "checked": [c.to_json() for c in self.checked]}
    if self.curve is not None:
      d["curve"] = {k: list(v) for k, v in self.curve.items()}
    return d

  @classmethod
  def from_json(cls, doc: Any, where: str = "solution") -> "Solution":
    """Checks `doc` field by field (`SolutionError` naming `where` and the field)."""
    jsonio.check_format(doc, where, FORMAT, READ_VERSIONS, SolutionError)
    jsonio.require_keys(doc, ("created", "mode", "model", "profile", "estimate", "settings",
                              "chosen", "full", "frontier"), where, SolutionError)
    jsonio.require(doc["mode"] in MODES, where, f"mode {doc['mode']!r} not in {MODES}",
                   SolutionError)
    model = doc["model"]
    jsonio.require(isinstance(model, dict) and isinstance(model.get("config"), dict), where,
                   "model.config must be an object", SolutionError)
    try:
      cfg = config_from_dict(model["config"])
    except (ValueError, TypeError) as e:
      raise SolutionError(f"{where}: model.config is invalid: {e}") from None
    check_config_types(cfg, where, SolutionError)
    jsonio.require(model.get("name") == cfg.name, where,
                   f"model.name {model.get('name')!r} != config name {cfg.name!r}", SolutionError)
    ch = doc["chosen"]
    jsonio.require(isinstance(ch, dict), where, f"chosen must be an object, got "
                   f"{type(ch).__name__}", SolutionError)
    jsonio.require_keys(ch, ("method", "criterion"), f"{where}: chosen", SolutionError)
    jsonio.require(is_method_name(ch["method"]), where,
                   not_a_method("chosen.method", ch["method"]), SolutionError)
    frontier = doc["frontier"]
    jsonio.require(isinstance(frontier, list), where, "frontier must be a list", SolutionError)
    checked = doc.get("checked", [])
    jsonio.require(isinstance(checked, list), where, "checked must be a list", SolutionError)
    jsonio.require(isinstance(doc["settings"], dict), where, "settings must be an object",
                   SolutionError)
    paper_only = [k for k, v in (("curve", doc.get("curve")), ("chosen.utility", ch.get("utility")),
                                 ("chosen.schedule_latency_s", ch.get("schedule_latency_s")))
                  if v is not None]
    jsonio.require(doc["mode"] == "paper" or not paper_only, where,
                   f"mode {doc['mode']!r} but it holds the paper mode's {', '.join(paper_only)} "
                   "(edited?)", SolutionError)
    # Every paper solution of this format holds its curve: the choice is checked against it
    # (without it, a hand-edited choice passed under any numbers).
    jsonio.require(doc["mode"] != "paper" or doc.get("curve") is not None, where,
                   "mode 'paper' but the curve the choice is checked against is missing "
                   "(edited?)", SolutionError)
    # A multi solution chooses among, and times, the schedules of its estimate's method (an
    # estimate that is not an object: `_ref` below says so).
    if doc["mode"] == "multi" and isinstance(doc["estimate"], dict):
      lm = doc["settings"].get("latency_model")
      for what, other in (("estimate.method", doc["estimate"].get("method")),
                          ("settings.latency_model.method",
                           lm.get("method", ch["method"]) if isinstance(lm, dict) else
                           ch["method"])):
        jsonio.require(other == ch["method"], where,
                       f"chosen.method {ch['method']!r} but {what} {other!r}: a multi-layer "
                       "solution deploys the method it was solved for (edited?)", SolutionError)
    jsonio.require(isinstance(ch["criterion"], str) and isinstance(doc["created"], str), where,
                   f"chosen.criterion and created must be strings, got {ch['criterion']!r} and "
                   f"{doc['created']!r}", SolutionError)
    for key in ("utility", "schedule_latency_s"):       # paper mode's
      jsonio.require(ch.get(key) is None or jsonio.is_num(ch[key]), where,
                     f"chosen.{key} must be a finite number or null, got {ch.get(key)!r}",
                     SolutionError)
    jsonio.require(ch.get("method_options") is None or (
        isinstance(ch["method_options"], dict) and all(isinstance(k, str)
                                                        for k in ch["method_options"])),
                   where, f"chosen.method_options must be an object of option values, got "
                   f"{ch.get('method_options')!r}", SolutionError)
    jsonio.require(ch.get("basis", "predicted") != "measured" or any(
        ch.get(k) is not None for k in ("measured_accuracy", "measured_latency_s")), where,
                   "chosen.basis is 'measured' but the chosen schedule has no measured number "
                   "(edited?)", SolutionError)
    sol = cls(
        mode=doc["mode"], config=cfg,
        profile=_ref(ProfileRef, doc["profile"], f"{where}: profile"),
        estimate=_ref(EstimateRef, doc["estimate"], f"{where}: estimate"),
        settings=dict(doc["settings"]),
        chosen=Candidate.from_json(ch, f"{where}: chosen", cfg), method=ch["method"],
        criterion=str(ch["criterion"]),
        full=(None if doc["full"] is None
              else Candidate.from_json(doc["full"], f"{where}: full", cfg)),
        frontier=tuple(Candidate.from_json(c, f"{where}: frontier[{i}]", cfg)
                       for i, c in enumerate(frontier)),
        checked=tuple(Candidate.from_json(c, f"{where}: checked[{i}]", cfg)
                      for i, c in enumerate(checked)),
        created=str(doc["created"]), basis=ch.get("basis", "predicted"),
        utility=_opt_float(ch.get("utility")),
        schedule_latency_s=_opt_float(ch.get("schedule_latency_s")),
        curve=doc.get("curve"), method_options=ch.get("method_options"),
        version=doc["version"], source=where)
    try:
      sol.schedule  # pylint: disable=pointless-statement  (checks the counts against the model)
    except (ValueError, TypeError) as e:
      raise SolutionError(f"{where}: chosen.counts {list(sol.chosen.counts)} is not a schedule "
                          f"of {cfg.name}: {e}") from None
    if sol.mode == "paper":
      _check_curve(sol, where)
    _check_choice(sol, where)
    return sol


CURVE_KEYS = ("tokens", "latency_s", "accuracy", "utility")


def _check_curve(sol: Solution, where: str) -> None:
  """A paper-mode curve: four number lists of one length over distinct token counts, n*
  among them (what the plot and a reader of the file rely on)."""
  c = sol.curve
  jsonio.require(isinstance(c, dict) and all(isinstance(c.get(k), list) for k in CURVE_KEYS),
                 where, f"curve must hold the lists {list(CURVE_KEYS)}", SolutionError)
  n = len(c["tokens"])
  jsonio.require(n > 0 and all(len(c[k]) == n for k in CURVE_KEYS), where,
                 f"curve lists {list(CURVE_KEYS)} must have one non-zero length, got "
                 f"{[len(c[k]) for k in CURVE_KEYS]}", SolutionError)
  jsonio.require(all(jsonio.is_int(t) for t in c["tokens"]) and
                 len(set(c["tokens"])) == n, where,
                 "curve.tokens must be distinct integers", SolutionError)
  lo, hi = sol.config.num_prefix_tokens + 1, sol.config.num_tokens
  stray = [t for t in c["tokens"] if not lo <= t <= hi]
  jsonio.require(not stray, where, f"curve.tokens holds {stray[0] if stray else None}, outside "
                 f"[{lo}, {hi}] for {sol.config.name} (edited?)", SolutionError)
  for k in CURVE_KEYS[1:]:
    jsonio.require(all(jsonio.is_num(v) for v in c[k]), where,
                   f"curve.{k} must hold finite numbers", SolutionError)
  jsonio.require(sol.chosen.tokens in c["tokens"], where,
                 f"chosen.tokens {sol.chosen.tokens!r} is not among curve.tokens",
                 SolutionError)


def solution_stem(model: str, mode: str, batch_size: int, dtype: str, device_kind: str) -> str:
  """`<model>_<mode>_b<batch>_<dtype>_<device>`: the file stem of a solution, from its
  profile's dtype and device (as the profile's own name), so that a solution on a bfloat16 or
  GPU profile no longer replaces the float32 CPU one."""
  return f"{model}_{mode}_b{batch_size}_{dtype}_{profile_records.slug(device_kind)}"


def _check_replaceable(json_path: str) -> None:
  """`json_path` (and its PNG) may be written: absent or a solution's, after finishing a killed
  run's publish (call under its lock)."""
  atomic.cleanup_stale(json_path)
  atomic.check_replaceable_json(json_path, FORMAT, [json_path[:-len(".json")] + ".png"])


def check_output(out_dir: str, stem: str) -> None:
  """Refuses, before any work, an output `write_solution(..., out_dir, stem)` could not write.
  Creates nothing: an absent `out_dir` holds nothing to refuse (a refused run left it behind
  empty, made by the lock). The name is built from the profile's fields (its device kind:
  whatever the file says), so it must fit with the hidden temporaries beside it."""
  path = os.path.join(out_dir, stem + ".json")
  atomic.check_name_fits(path, "out_dir", "made of the profile's model, batch size, dtype and "
                         "device kind")
  if not os.path.isdir(out_dir):
    return
  with atomic.locked(path):
    _check_replaceable(path)


def write_solution(sol: Solution, out_dir: str, stem: Optional[str] = None, *,
                   replaces: Any = atomic.ANY_OUTPUT) -> Dict[str, str]:
  """Writes `<stem>.json` and `<stem>.png` (paper: the U/L/A curves; multi: the frontier)
  together (`atomic.staged_files`: a run killed midway leaves the old pair or the new one)
  -> {'json': path, 'png': path}. The plot is rendered before anything is written; a file
  there that is not a solution (or a PNG without its JSON) is never replaced, nor, with
  `replaces` (the JSON's `atomic.file_stamp` when the run began), one written since
  (`atomic.ReplacedMeanwhileError`)."""
  from vitprune import solve_plot  # pylint: disable=g-import-not-at-top  (it imports this module)
  stem = stem or sol.stem
  paths = {"json": os.path.join(out_dir, stem + ".json"),
           "png": os.path.join(out_dir, stem + ".png")}
  doc = sol.to_json()
  # What `read_solution` would refuse is never written (a record built in Python is not checked
  # field by field; a paper solution without its curve among it).
  Solution.from_json(jsonio.json_form(doc), where=f"{paths['json']} (not written)")
  png = solve_plot.plot_solution(sol)
  with atomic.locked(paths["json"]):
    _check_replaceable(paths["json"])                          # never another's
    atomic.check_unchanged(paths["json"], replaces)            # nor one written meanwhile
    names = [stem + ".png", stem + ".json"]         # the JSON, which readers check, last
    with atomic.staged_files(out_dir, stem + ".json", names) as tmp:
      with open(os.path.join(tmp, names[0]), "wb") as f:
        f.write(png)
      atomic.write_json(os.path.join(tmp, names[1]), doc, indent=1)
  return paths


def read_solution(path: str) -> Solution:
  """The solution in `path`; FileNotFoundError / `SolutionError` naming the file and field."""
  path = os.path.abspath(check_path("the solution path", path))   # ('': the working directory)
  if jsonio.why_not_a_file(path) == "does not exist":   # (which command makes one: a user asked)
    raise FileNotFoundError(f"solution file {path!r} does not exist (experiments.solve writes "
                            "one, and the main job, python -m experiments.profile, into its "
                            "solve/ folder)")
  return Solution.from_json(jsonio.read_json(path, "solution", SolutionError), where=path)
