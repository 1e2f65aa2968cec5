"""The paper's offline computation, end to end: profile -> estimate -> solve -> verify.

  1. profile   L(n): the whole-model latency curve on the local device at one batch size, tokens
               dropped right after the embedding (`vitprune.profile.runner`, mode 'model').
  2. estimate  A(n): accuracy (labelled data) or top-1 agreement (unlabelled) with tokens randomly
               dropped after the embedding, over the same grid (`vitprune.estimate`).
  3. solve     n* = argmax U(n) = alpha (1 - L/max L) + (1 - alpha) A/max A, and the POMT schedule
               that prunes to exactly n* tokens at block `layer` (`vitprune.solve_stage`); the
               `retime_top` counts of highest utility and the unpruned graph are timed again
               together (interleaved), their samples pooled into the profile's, and n* taken
               again, until n* is a count timed again: an argmax over many noisy points
               favours one measured fast by chance (`retime_top_counts`).
  4. verify    the chosen POMT graph and the unpruned graph are compiled and timed with the
               profiler's protocol on the same device (in `loop_rounds` interleaved rounds),
               and evaluated on the same data.

With `solver='multi'` (beyond the paper) stage 1 measures, in one shuffled measurement, the
uniform-count curve and `calibration_schedules` multi-layer schedules of `method` as whole
compiled graphs and fits the latency model of the compiled graph
(`vitprune.profile.latency_model`); stage 2 the per-layer sensitivity S[l, n] of `method` at
every block; stage 3 picks a per-layer schedule from the exact Pareto frontier (fastest above
`accuracy_floor`, most accurate under `latency_budget`, else best utility). With a floor, the
floor is checked on the data (measured accuracy, with its binomial interval) and the latency is
measured in the loop: the choice and up to `loop_neighbours` neighbours on each side (from the
frontier and the schedules measured) that meet the floor are compiled and timed together (in
`loop_rounds` interleaved rounds), and the fastest measured one is chosen
(`solve_loop.check_in_loop`). With a budget, the choice and its neighbours are measured the
same way and the most accurate one measured within the budget is chosen
(`solve_loop.check_budget_in_loop`). Stage 4 is unchanged, so the choice is verified on the
real graph and data.

The stages pass typed records in memory (`Profile`, `Estimate`, `Solution`, `Verification`);
only the output step writes files under `out_dir` (profile/, estimate/, solve/ and summary.json)
as one transaction (staged, then published together), so the stages can be rerun or inspected
separately with their own CLIs and a killed run never leaves a mix of two runs.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune import checkpoint
from vitprune import console
from vitprune import estimate as estimate_lib
from vitprune import intervals
from vitprune import jsonio
from vitprune import solve
from vitprune import solve_loop
from vitprune import solve_stage
from vitprune.config import ViTConfig, method_label, method_options_problem
from vitprune.model import Params, check_options, jitted_forward
from vitprune.profile import latency_model as latency_model_lib
from vitprune.profile import protocol, records, runner, timing
from vitprune.profile import steps as steps_lib
from vitprune.records.estimate import Estimate, default_metric, write_estimate
from vitprune.records.solution import (Solution, judges_paired_change, pruned_meeting_floor,
                                       write_solution)
from vitprune.records.solution_text import (budget_cost_text, checked_error_shown,
                                            describe_capped, describe_checked_error,
                                            describe_frontier_error, describe_refinement,
                                            picked_by_untrusted_model, reaimed_text,
                                            shown_schedules, within_spread_note)
from vitprune.reduce.methods import make_reducer
from vitprune.schedule import Schedule, embed_counts, embed_schedule, full_schedule


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
  """What the pipeline runs. `tokens=None`: every count from all tokens down to prefix + 1."""
  batch_size: int = 1
  dtype: str = "float32"
  tokens: Optional[Tuple[int, ...]] = None
  data: str = "digits"
  num_images: Optional[int] = None
  eval_batch_size: int = 64
  alpha: float = 0.5
  layer: int = 3
  method: str = "pomt"
  # The method's reducer options (random drop's nested, EViT's normalize), sorted (key, value)
  # pairs; random drop's seed is `seed`.
  method_options: Tuple[Tuple[str, Any], ...] = ()
  timing: timing.TimingConfig = timing.TimingConfig(min_run_time=0.2)
  threads: int = 2
  seed: int = 0
  solver: str = "paper"                    # 'paper' | 'multi'
  accuracy_floor: Optional[float] = None   # multi: fastest schedule at or above this
  latency_budget: Optional[float] = None   # multi: most accurate schedule within (seconds)
  max_accuracy_drop: Optional[float] = None  # multi: floor = the unpruned's measured metric -
                                             # this (0.01: one point), on the same images
  floor_confidence: bool = False           # multi + floor/drop: a schedule meets it only by its
                                           # whole 95 % interval (a drop's: paired)
  # multi: compiled graphs fitting the latency model
  calibration_schedules: int = latency_model_lib.DEFAULT_CALIBRATION_SCHEDULES
  loop_neighbours: int = 2                 # multi + floor/budget: neighbours timed in the loop
                                           # with the choice (0: the choice alone)
  retime_top: int = 5                      # paper: counts of highest utility re-timed with
                                           # the unpruned graph and pooled (0: none)
  loop_rounds: int = 5                     # ... and the verify stage's two graphs, in this many
                                           # interleaved rounds (TimingConfig.rounds)
  measure_frontier: bool = False           # multi: measure every frontier schedule's accuracy
  refine_accuracy_rounds: int = 0          # multi: correct the accuracy model from measured
                                           # frontiers, re-solve (solve_loop.refine_accuracy)
  holdout_images: Optional[int] = None     # evaluation images kept from the estimate and the
                                           # solve; the verify stage evaluates the choice on them
  confirm_steps: bool = True               # paper: the profiler times a step or lone count
                                           # timed apart again (runner.profile_batch)

  def __post_init__(self):
    if self.batch_size < 1 or self.eval_batch_size < 1:
      raise ValueError(f"batch sizes must be >= 1, got {self.batch_size}, "
                       f"{self.eval_batch_size}")
    check_options(self.dtype, "highest")   # (was refused after the data loaded, stage 1 begun)
    solve.check_alpha(self.alpha)          # (True was taken as 1.0)
    # (-1 and 2**32 were refused mid-run: by numpy's generators, by the estimate record)
    if not 0 <= self.seed <= console.MAX_SEED:
      raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
    if self.solver not in ("paper", "multi"):
      raise ValueError(f"solver must be 'paper' or 'multi', got {self.solver!r}")
    if self.solver == "paper" and (self.accuracy_floor is not None or
                                   self.latency_budget is not None or
                                   self.max_accuracy_drop is not None):
      raise ValueError("accuracy_floor / latency_budget / max_accuracy_drop apply to "
                       "solver='multi' only")
    if self.measure_frontier and self.solver != "multi":
      raise ValueError("measure_frontier applies to solver='multi' only")
    if self.refine_accuracy_rounds and self.solver != "multi":
      raise ValueError("refine_accuracy_rounds applies to solver='multi' only")
    if self.refine_accuracy_rounds < 0:
      raise ValueError(f"refine_accuracy_rounds must be >= 0, got {self.refine_accuracy_rounds}")
    solve_stage.check_one_frontier_measurement(
        self.measure_frontier, self.refine_accuracy_rounds,
        ("measure_frontier", "refine_accuracy_rounds"))
    if self.accuracy_floor is not None and self.latency_budget is not None:
      raise ValueError("give accuracy_floor or latency_budget, not both")
    if self.max_accuracy_drop is not None:
      if self.accuracy_floor is not None or self.latency_budget is not None:
        raise ValueError("give max_accuracy_drop, accuracy_floor or latency_budget, not two")
      solve_stage.check_accuracy_drop(self.max_accuracy_drop)
    if self.floor_confidence and (self.solver != "multi" or (
        self.accuracy_floor is None and self.max_accuracy_drop is None)):
      raise ValueError("floor_confidence applies to solver='multi' with accuracy_floor or "
                       "max_accuracy_drop")
    if self.accuracy_floor is not None and not 0.0 <= self.accuracy_floor <= 1.0:
      raise ValueError(f"accuracy_floor must be in [0, 1], got {self.accuracy_floor}")
    if self.latency_budget is not None and not 0.0 < self.latency_budget < float("inf"):
      raise ValueError(f"latency_budget must be a positive number of seconds, got "
                       f"{self.latency_budget}")
    if self.num_images is not None and self.num_images < 1:
      raise ValueError(f"num_images must be >= 1, got {self.num_images}")
    if self.holdout_images is not None and self.holdout_images < 1:
      raise ValueError(f"holdout_images must be >= 1, got {self.holdout_images}")
    if (self.holdout_images is not None and self.num_images is not None
        and self.holdout_images >= self.num_images):
      raise ValueError(f"holdout_images={self.holdout_images} leaves none of the "
                       f"{self.num_images} images (num_images) to choose on")
    if self.threads < 1:
      raise ValueError(f"threads must be >= 1, got {self.threads}")
    if self.loop_rounds < 1:
      raise ValueError(f"loop_rounds must be >= 1, got {self.loop_rounds}")
    if self.loop_neighbours < 0:
      raise ValueError(f"loop_neighbours must be >= 0, got {self.loop_neighbours}")
    if self.retime_top < 0:
      raise ValueError(f"retime_top must be >= 0, got {self.retime_top}")
    latency_model_lib.check_calibration_count(self.calibration_schedules,
                                              "calibration_schedules")
    if self.layer < 0:
      raise ValueError(f"layer must be >= 0, got {self.layer}")
    problem = self.random_drop and method_options_problem(
        "random", dict(self.method_options), {"seed": "--seed"})
    if problem:            # (the accepted options it names leave the seed to --seed)
      raise ValueError(problem)
    if "seed" in dict(self.method_options) and self.random_drop:
      raise ValueError("method_options gives a seed: random drop's seed is the spec's seed "
                       "(--seed; it seeds the image subset too)")
    self.reducer()   # an unknown method or option fails here, before any stage runs

  @property
  def random_drop(self) -> bool:
    """Whether the chosen method is random drop (its seed is `seed`), as names are accepted."""
    return self.method.strip().lower() == "random"

  def reducer_options(self) -> Dict[str, Any]:
    """The chosen method's options: `method_options`, and for random drop its seed, `seed`."""
    seed = {"seed": self.seed} if self.random_drop else {}
    return {**seed, **dict(self.method_options)}

  def reducer(self):
    """The reducer of the chosen schedule's method, with `reducer_options`."""
    return make_reducer(self.method, **self.reducer_options())

  def check(self, cfg: ViTConfig) -> None:
    """The checks that need the model: `layer` is one of its blocks, `tokens` within its range.
    Raises ValueError before any stage runs."""
    if self.solver == "paper" and self.layer >= cfg.depth:     # (multi mode reads no layer)
      raise ValueError(f"layer {self.layer} is outside [0, {cfg.depth - 1}] ({cfg.name} has "
                       f"{cfg.depth} blocks)")
    bad = [n for n in self.tokens or () if not cfg.num_prefix_tokens < n <= cfg.num_tokens]
    if bad:
      raise ValueError(f"tokens {bad} are outside [{cfg.num_prefix_tokens + 1}, "
                       f"{cfg.num_tokens}]")
    if self.solver == "multi":
      one_block_counts(cfg, self.grid(cfg), self.reducer())
      grid = sorted(set(self.grid(cfg)) | {cfg.num_tokens})      # (as `calibrate` draws them;
      drawn = latency_model_lib.calibration_schedules(            # it failed after stage 1
          cfg, grid, self.calibration_schedules, method=self.method,   # began)
          seed=self.seed, at_most=True)
      if len(drawn) < self.calibration_schedules:
        raise ValueError(f"calibration_schedules={self.calibration_schedules}: only "
                         f"{len(drawn)} distinct {self.method} multi-layer schedules were found "
                         f"on the token grid {list(self.grid(cfg))}; ask for fewer or profile "
                         "more token counts (tokens)")
    elif cfg.num_tokens not in self.grid(cfg):   # the solve stage refused it after the others
      raise ValueError(f"tokens {list(self.tokens)} lack the full {cfg.num_tokens}: the paper "
                       "solver weighs every count against the unpruned model (add "
                       f"{cfg.num_tokens})")
    else:
      try:
        solve_stage.check_paper_grid(cfg, self.method, self.grid(cfg))
      except solve.SolveInputError as e:
        raise ValueError(f"tokens {list(self.tokens)}: {e}") from None

  def grid(self, cfg: ViTConfig) -> Tuple[int, ...]:
    """Token counts to profile and estimate: `tokens`, else every count (paper) or every 4th
    count from all tokens down (multi: depth x counts sensitivity graphs are compiled)."""
    if self.tokens:
      return tuple(self.tokens)
    step = 1 if self.solver == "paper" else 4
    return tuple(range(cfg.num_tokens, cfg.num_prefix_tokens, -step))


def load_data(spec: PipelineSpec, class_names: Optional[Sequence[str]] = None,
              num_classes: Optional[int] = None,
              flag: Optional[str] = None) -> estimate_lib.EvalData:
  """The evaluation data `spec` names, image-folder labels matched to the model's
  `class_names` (raises FileNotFoundError / ValueError on bad input; `flag`, a CLI's '--data':
  named by a refusal of the image folder)."""
  return estimate_lib.load_eval_data(spec.data, num_images=spec.num_images, seed=spec.seed,
                                     class_names=class_names, num_classes=num_classes,
                                     flag=flag)


def _measure_graphs(cfg: ViTConfig, params: Params, graphs: Dict[str, Tuple[Schedule, Any]],
                    spec: PipelineSpec) -> Dict[str, timing.Measurement]:
  """AOT-compiles and times each named (schedule, reducer) graph at `spec.batch_size`."""
  rng = np.random.default_rng(spec.seed)
  images = timing.device_put(jnp.asarray(rng.normal(
      0, 1, (spec.batch_size, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32))
  params = timing.device_put(params)
  jobs = {}
  for name, (schedule, reducer) in graphs.items():
    fn = lambda p, x, s=schedule, r=reducer: jitted_forward(  # noqa: E731
        p, x, cfg=cfg, schedule=s, reducer=r, dtype=spec.dtype)
    jobs[name] = (fn, (params, images))
  compiled = timing.compile_many(jobs, threads=spec.threads)
  points = {k: (c, jobs[k][1]) for k, (c, _) in compiled.items()}
  return timing.measure_all(points, spec.timing,
                            compile_s={k: s for k, (_, s) in compiled.items()})


def _interleaved(spec: PipelineSpec) -> PipelineSpec:
  """`spec` timing graphs in `spec.loop_rounds` interleaved rounds (the protocol of every
  comparison the job makes: drift during the measurement reaches each graph alike)."""
  return dataclasses.replace(spec, timing=dataclasses.replace(spec.timing,
                                                              rounds=spec.loop_rounds))


class ScheduleTimer:
  """`timer(counts_list) -> [median seconds with their IQR]` (`solve_loop.MeasuredSeconds`):
  compiles every schedule of `reducer` and times them
  all in ONE shuffled measurement with the profiler's protocol (`timing`), in
  `spec.loop_rounds` interleaved rounds (each graph's time split into bursts, every round
  reshuffled), so drift during the measurement reaches every candidate alike. `measured`:
  {counts: timing.Measurement} of every schedule timed so far (their spreads)."""

  def __init__(self, cfg: ViTConfig, params: Params, spec: PipelineSpec, reducer):
    self._cfg, self._params, self._reducer = cfg, params, reducer
    self._spec = _interleaved(spec)
    self.measured: Dict[Tuple[int, ...], timing.Measurement] = {}

  def __call__(self, counts_list: Sequence[Sequence[int]]
               ) -> List["solve_loop.MeasuredSeconds"]:
    graphs = {i: (Schedule(tuple(counts)), self._reducer)
              for i, counts in enumerate(counts_list)}
    meas = _measure_graphs(self._cfg, self._params, graphs, self._spec)
    self.measured.update((tuple(counts), meas[i]) for i, counts in enumerate(counts_list))
    return [solve_loop.MeasuredSeconds(meas[i].median, meas[i].iqr)
            for i in range(len(counts_list))]


def _calibrate(cfg, params, spec, tokens, log):
  """Stage 1, multi: the latency model of the compiled graph -> (Profile, LatencyModel)."""
  log(f"[1/4] profile: {cfg.name} latency model of the compiled graph on "
      f"{jax.devices()[0].device_kind}, batch {spec.batch_size}, {spec.dtype}: uniform curve at "
      f"{len(set(tokens) | {cfg.num_tokens})} token counts + {spec.calibration_schedules} "
      f"{spec.method} calibration "
      f"schedules, one shuffled measurement")
  lm, profile = latency_model_lib.calibrate(
      cfg, params, method=spec.method, batch_size=spec.batch_size, dtype=spec.dtype,
      tokens=tokens, timing_cfg=spec.timing, num_schedules=spec.calibration_schedules,
      threads=spec.threads, seed=spec.seed)
  p = lm.params
  log(f"  fit: scale {p['scale']:.3f} of the uniform curve's per-block share, MLP shift "
      f"{p['mlp']:.3f}, reduction {1e6 * p['r0']:.1f} + {1e6 * p['r1']:.1f} * n/N us, "
      f"+{p.get('post', 0.0):.3f} of a block's share in each block after a reduction, "
      f"constant {1e6 * p['const']:.1f} us; |error| on the {int(lm.reducing.sum())} "
      f"calibration schedules that reduce: median {100 * lm.residual_median:.1f}%, p90 "
      f"{100 * lm.residual_p90:.1f}%")
  return profile, lm


def _profile(cfg, params, spec, tokens, progress, log) -> records.Profile:
  """Stage 1: the whole-model curve (paper) or the per-block table."""
  mode = "model" if spec.solver == "paper" else "block"
  what = "latency vs tokens" if mode == "model" else "per-block latency table"
  log(f"[1/4] profile: {cfg.name} {what} on {jax.devices()[0].device_kind}, batch "
      f"{spec.batch_size}, {spec.dtype}, {len(tokens)} token counts")
  pspec = runner.ProfileSpec(cfg=cfg, batch_sizes=(spec.batch_size,), dtype=spec.dtype,
                             mode=mode, tokens=tuple(tokens), timing=spec.timing,
                             threads=spec.threads, seed=spec.seed,
                             confirm_steps=spec.confirm_steps)
  profile = runner.run_profile(pspec, params=params, progress=progress,   # (a confirmation's
                               log=lambda line: log("  " + line))[0]        # line, indented)
  for line in runner.summary_table(profile).splitlines():
    if ((" -> " in line and "saves" in line) or "predicted" in line   # steps, predictor errors
        or " lone " in line):                                           # and lone counts
      log("  " + line.strip())
  log("  " + curve_shape_line(*_curve_shape(profile)))
  return profile


def measured_on_data_text(multi: int, singles: int) -> str:
  """'2 multi-layer schedules on the data (candidates too: the 51 single reductions meeting the
  floor, measured by the estimate)': what a floor's check measured (a probe read 'the 1 single
  reductions')."""
  return (f"{console.counted(multi, 'multi-layer schedule')} on the data (candidates too: the "
          f"{console.counted(singles, 'single reduction')} meeting the floor, measured by the "
          "estimate)")


def _curve_shape(profile: records.Profile) -> Tuple[int, int, int]:
  """(steps, flat stretches, lone counts) the analysis of `profile` finds."""
  return len(profile.steps), len(profile.flats), len(profile.lone_counts)


def curve_shape_line(steps: int, flats: int, lone: int) -> str:
  """'0 steps, 11 flat stretches, 1 lone count (...)': the profile stage's count of each."""
  return (f"{console.counted(steps, 'step')}, "
          f"{console.counted(flats, 'flat stretch', 'flat stretches')}"
          + (f", {console.counted(lone, 'lone count')}" if lone else "")
          + " (the profile JSON/CSV/PNG has them all)")


def one_block_counts(cfg, tokens: Sequence[int], reducer) -> List[int]:
  """The counts of `tokens` below N that one block of `reducer` can reach from all N tokens
  (the per-layer sensitivity grid; ToMe: at least about half), ascending; ValueError when none
  is."""
  n_full = cfg.num_tokens
  cap = reducer.max_remove(n_full, cfg.num_prefix_tokens)
  reduced = latency_model_lib.reachable_counts(
      n_full, 1, tokens, lambda n: reducer.max_remove(n, cfg.num_prefix_tokens))
  if not any(int(n) < n_full for n in tokens):
    raise ValueError(f"the token grid ({min(tokens)}..{max(tokens)}) has no count below all "
                     f"{n_full} tokens: a multi-layer schedule needs counts to reduce to")
  if not reduced:
    raise ValueError(f"{reducer.name} removes at most {cap} of {n_full} tokens in one block: "
                     f"no token count of the grid ({min(tokens)}..{max(tokens)}) below {n_full} "
                     f"is reachable; use counts >= {n_full - cap}")
  return reduced


def _estimate(cfg, params, spec, tokens, data, weights_source, log, pieces=None
              ) -> Tuple[Estimate, Optional[Dict[Tuple[int, ...], np.ndarray]]]:
  """Stage 2: A(n) with random drops after the embedding (paper) or the per-layer sensitivity
  of `spec.method` at every block (multi) -> (record, margins): with the accuracy refinement
  also every measured schedule's per-example top-1 margins ({counts: [M]}, the unpruned one
  included: the margin table of `solve.anchored_accuracy`), else None. They stay in memory;
  the solve stage adds the margins of every schedule it measures (the anchors)."""
  if spec.solver == "paper":
    metric = "accuracy" if data.labelled else "agreement with the unpruned model"
    log(f"[2/4] estimate: {metric} with tokens randomly dropped after the embedding, "
        f"{console.counted(len(data.indices), 'image')} of {spec.data}")
    method, kwargs = "random", {"seed": spec.seed}
    if spec.random_drop:                          # (the chosen method's own draws)
      kwargs = spec.reducer_options()
    points = estimate_lib.token_points(cfg, tokens, make_reducer(method, **kwargs), layer=None)
  else:
    method, kwargs = spec.method, spec.reducer_options()
    reducer = spec.reducer()
    reduced = one_block_counts(cfg, tokens, reducer)
    log(f"[2/4] estimate: {spec.method} sensitivity at each of {cfg.depth} blocks x "
        f"{len(reduced)} token counts, {console.counted(len(data.indices), 'image')} of "
        f"{spec.data}")
    if len(reduced) < sum(n < cfg.num_tokens for n in tokens):
      log(f"  {method} removes at most {reducer.max_remove(cfg.num_tokens, cfg.num_prefix_tokens)}"
          f" of {cfg.num_tokens} tokens in one block: counts below {min(reduced)} cannot be "
          f"measured as single reductions and are left out of the multi-layer grid")
    points = estimate_lib.sensitivity_points(cfg, reduced, list(range(cfg.depth)), reducer)
  keep = spec.solver == "multi" and spec.refine_accuracy_rounds > 0
  result = estimate_lib.evaluate(cfg, params, data.batches(cfg, spec.eval_batch_size), points,
                                 labelled=data.labelled, dtype=spec.dtype,
                                 threads=spec.threads, pieces=pieces, margins=keep)
  record = estimate_lib.estimate_record(
      cfg=cfg, params=params, weights_source=weights_source, data_info=data.info,
      method=method, method_kwargs=kwargs, seed=spec.seed, points=points, result=result,
      labelled=data.labelled, dtype=spec.dtype)
  if not keep:
    return record, None
  margins = {embed_counts(cfg.num_tokens, cfg.depth): result.margins[0]}
  margins.update((tuple(p.schedule.counts), m) for p, m in zip(points, result.margins[1:]))
  return record, margins


def _solve(cfg, params, spec, data, profile, estimate, log, latency_model=None,
           seconds: Optional[Dict[str, float]] = None, pieces=None, margins=None
           ) -> Tuple[Solution, records.Profile]:
  """Stage 3: the paper's n* (its counts of highest utility re-timed into `profile`) or the
  multi-layer choice (floor checked on the data) -> (solution, the profile it rests on).
  `seconds['in_loop']` gets the wall time of the in-loop timing (paper with `retime_top`;
  multi with a floor or a budget);
  `margins`: the estimate stage's (anchored predictions in the refinement's report)."""
  if spec.solver == "paper":
    log(f"[3/4] solve: paper utility, alpha={spec.alpha}, {spec.method} at block {spec.layer}")

    def solve_on(prof: records.Profile) -> Solution:
      return solve_stage.solve_paper(
          prof, estimate, alpha=spec.alpha, layer=spec.layer, method=spec.method,
          method_options=spec.reducer_options(),
          allow_batch_mismatch=True)  # accuracy does not depend on the batch size it was run at
    sol = solve_on(profile)
    if spec.retime_top:
      t0, before, shape = time.perf_counter(), sol, _curve_shape(profile)
      profile, sol = retime_top_counts(cfg, params, spec, profile, sol, solve_on)
      if seconds is not None and "retimed_counts" in sol.settings:
        seconds["in_loop"] = time.perf_counter() - t0
      log("  " + retime_line(before, sol))
      if _curve_shape(profile) != shape:      # (stage 1's lines were of the curve before)
        log("  the pooled profile: " + curve_shape_line(*_curve_shape(profile)))
    ch = sol.chosen
    log(f"  n* = {ch.tokens} tokens; at n*, L = {1e3 * ch.predicted_latency_s:.4f} ms (every "
        f"block at n*) and random-drop A = {ch.predicted_accuracy:.4f}: the paper's proxies for "
        f"the {spec.method} schedule")
    if sol.settings.get("capped_counts"):        # (ToMe's per-block limit: said, not dropped)
      log("  " + describe_capped(sol))
  else:
    metric = default_metric(data.labelled)
    rule = (f"{metric} >= {spec.accuracy_floor}" if spec.accuracy_floor is not None else
            f"{metric} >= the unpruned's - {spec.max_accuracy_drop:g}"
            if spec.max_accuracy_drop is not None else
            f"latency <= {spec.latency_budget} s" if spec.latency_budget is not None else
            f"best utility, alpha={spec.alpha}")
    if spec.floor_confidence:
      rule += (" by the whole paired 95% interval of the change" if spec.max_accuracy_drop
               is not None else " by the whole 95% interval")
    log(f"[3/4] solve: multi-layer Pareto frontier, {rule}")
    evaluate = estimate_lib.schedule_evaluator(cfg, params, data, spec.reducer(),
                                               batch_size=spec.eval_batch_size,
                                               dtype=spec.dtype, pieces=pieces,
                                               record_margins=margins)
    sol = solve_stage.solve_multilayer(
        profile, estimate, accuracy_floor=spec.accuracy_floor,
        latency_budget=spec.latency_budget, alpha=spec.alpha, allow_batch_mismatch=True,
        max_accuracy_drop=spec.max_accuracy_drop, floor_confidence=spec.floor_confidence,
        evaluate=evaluate, latency_model=latency_model, num_images=len(data.indices),
        measure_all=spec.measure_frontier, refine_rounds=spec.refine_accuracy_rounds,
        margins=margins, loop_neighbours=spec.loop_neighbours)
    log(f"  frontier: {console.counted(len(sol.frontier), 'schedule')} "
        f"(latency: {sol.profile.latency_source})")
    if sol.settings.get("frontier_accuracy_error"):
      log("  " + describe_frontier_error(sol.settings["frontier_accuracy_error"]))
    if sol.settings.get("accuracy_refinement"):
      log("  " + describe_refinement(sol.settings["accuracy_refinement"]))
    floor = sol.settings["accuracy_floor"]      # (a drop's: below the unpruned's measurement)
    floor_checked = sol.basis == "measured" and floor is not None
    loop_kw = dict(neighbours=spec.loop_neighbours, num_images=len(data.indices))
    before, t0 = sol.chosen, time.perf_counter()
    timed_line = None       # (printed after what was measured on the data, which came first)
    if floor_checked:
      timer = ScheduleTimer(cfg, params, spec, spec.reducer())
      sol = solve_loop.check_in_loop(sol, estimate, None, evaluate, timer, **loop_kw)
      timed = sol.settings["timed_in_loop"]
      timed_line = (
          f"  timed {console.counted(timed, 'compiled graph')} meeting the floor "
          f"around the choice: fastest measured {sol.chosen.schedule} "
          f"{1e3 * sol.chosen.measured_latency_s:.4f} ms (predicted "
          f"{1e3 * sol.chosen.predicted_latency_s:.4f} ms)"
          + ("" if sol.chosen.counts == before.counts else
             f", replacing the predicted-fastest {before.schedule}"
             + _spread_mark(timer.measured, sol.chosen.counts, before.counts)))
    if spec.latency_budget is not None:
      sol = solve_loop.check_budget_in_loop(
          sol, evaluate, ScheduleTimer(cfg, params, spec, spec.reducer()), **loop_kw)
      timed, rounds = sol.settings["timed_in_loop"], sol.settings["timed_rounds"]
      log(f"  timed {console.counted(timed, 'compiled graph')} around the choice"
          + ("" if len(rounds) == 1 else
             f" ({reaimed_text(rounds)}, each round one measurement)")
          + f": the most accurate within {1e3 * spec.latency_budget:.4g} ms is "
          f"{sol.chosen.schedule}, "
          f"measured {1e3 * sol.chosen.measured_latency_s:.4f} ms (predicted "
          f"{1e3 * sol.chosen.predicted_latency_s:.4f} ms), {sol.metric} "
          f"{sol.chosen.measured_accuracy:.4f}"
          + ("" if sol.chosen.counts == before.counts else
             f", replacing the choice before timing, {before.schedule} (measured "
             f"{1e3 * _timed(sol, before.counts):.4f} ms)"))
    if seconds is not None and "timed_in_loop" in sol.settings:
      seconds["in_loop"] = time.perf_counter() - t0
    if sol.settings.get("floor_straddles"):
      paired = judges_paired_change(sol.settings)
      log(f"  the 95% interval{' (paired)' if paired else ''} "
          f"straddles the floor for: {shown_schedules(sol.settings['floor_straddles'])}")
    if floor_checked:
      got = sol.chosen.measured_accuracy
      ch = sol.chosen
      if not spec.floor_confidence:
        rule, shown = f"{sol.metric} >= {floor:.6g}", ""
        singles = sol.settings["singles_meeting_floor"]
        multi = sum(solve.is_multi_reduction(c.counts) for c in sol.checked)
        what = measured_on_data_text(multi, singles)
      else:
        paired = sum(c.measured_change_low is not None for c in sol.checked)
        what = (f"{console.counted(paired, 'schedule')} on the data image by image against "
                "the unpruned graph, single reductions among them")
        if spec.max_accuracy_drop is not None:
          rule = (f"a change against the unpruned graph >= -{spec.max_accuracy_drop:g} by its "
                  "whole paired 95% interval")
          shown = (f" (change {got - sol.full.predicted_accuracy + 0.0:+.4f}, paired 95% "
                   f"interval {ch.measured_change_low:+.4f}..{ch.measured_change_high:+.4f})")
        else:
          rule = f"{sol.metric} >= {floor:.6g} by its whole 95% interval"
          shown = (f" (95% interval {ch.measured_accuracy_low:.4f}.."
                   f"{ch.measured_accuracy_high:.4f})")
      meeting = len(pruned_meeting_floor(sol))
      log(f"  measured {what}: " + (
          f"the chosen {ch.schedule} (the fastest timed, below) measures {got:.4f}{shown}, "
          f"meeting {rule}" if ch.counts != sol.full.counts
          else f"no pruned schedule meets {rule}: keeping all tokens" if not meeting else
          f"{console.counted(meeting, 'pruned schedule')} "
          f"{'meets' if meeting == 1 else 'meet'} {rule}, but the unpruned graph measured "
          "fastest: keeping all tokens"))
    if timed_line is not None:
      log(timed_line)
      close = within_spread_note(sol)
      if close:
        log(f"  {close}")
    if checked_error_shown(sol.settings):                # (floor or budget)
      log("  " + describe_checked_error(sol.settings["checked_accuracy_error"]))
    if sol.settings.get("latency_untrusted"):
      log(f"  warning: the predicted latency is not to be trusted: "
          f"{sol.settings['latency_untrusted']}")
    picked = picked_by_untrusted_model(sol.settings)
    if picked:
      log("  " + picked)
    ch = sol.chosen
    measured = ([] if ch.measured_latency_s is None else
                [f"{1e3 * ch.measured_latency_s:.4f} ms"]) + (
        [] if ch.measured_accuracy is None else [f"{sol.metric} {ch.measured_accuracy:.4f}"])
    log(f"  chosen: predicted {1e3 * ch.predicted_latency_s:.4f} ms, {sol.metric} "
        f"{ch.predicted_accuracy:.4f}" + (f"; measured {', '.join(measured)}" if measured else ""))
  log(f"  schedule {sol.chosen.schedule}")
  return sol, profile


RETIME_ROUNDS = 8     # re-timing rounds at most (each times the new n* at least)


def retime_top_counts(cfg: ViTConfig, params: Params, spec: PipelineSpec,
                      profile: records.Profile, sol: Solution,
                      solve_on: Callable[[records.Profile], Solution]
                      ) -> Tuple[records.Profile, Solution]:
  """The paper's choice confirmed by measurement -> (profile, solution). The `spec.retime_top`
  counts of highest utility on `sol`'s curve (the unpruned count aside) are timed again with the
  unpruned graph, in one interleaved measurement of their uniform graphs (the profile's 'model'
  points: every block at n, the profile's reducer dropping after the embedding); each count's
  samples, scaled by the unpruned graph's profiled / re-timed median (the machine's drift since
  the profile: a uniformly slower moment made every count re-timed look worse than those not),
  join its profile point's (median and quartiles of all), and `solve_on` chooses again,
  until n* is a count timed again (a round times the counts of highest utility not yet timed
  again; `RETIME_ROUNDS` at most: each times one count at least, the new n*). A
  single count measured fast by chance (a burst, its neighbours 30-60 % slower) won the argmax
  over every count, and the choice rested on it alone (an audit's main job: n* 33 at 0.45 ms,
  the verify stage timed its graph at 0.92 ms). The solution records the re-timed counts
  (`settings['retimed_counts']`) and n* after each round (`settings['retimed_choices']`); the
  profile returned holds the pooled points (analysed again), the one the solution's curve and
  digest are of."""
  full, batch = cfg.num_tokens, sol.profile.batch_size
  reducer, _ = runner.make_drop_reducer(profile.reducer)
  retimed: List[int] = []
  path: List[int] = []                 # n* after each round (a move and back is said)
  for _ in range(RETIME_ROUNDS):
    if sol.chosen.tokens in retimed or sol.chosen.tokens == full:
      break
    utility = dict(zip(sol.curve["tokens"], sol.curve["utility"]))
    ranked = sorted((n for n in utility if n != full and n not in retimed),
                    key=lambda n: -utility[n])
    todo = ranked[:spec.retime_top]
    graphs = {n: (embed_schedule(cfg, n), reducer) for n in todo + [full]}
    measured = _measure_graphs(cfg, params, graphs, _interleaved(spec))
    profile = _pooled(profile, batch, measured, full)
    retimed += todo
    sol = solve_on(profile)
    path.append(sol.chosen.tokens)
  if not retimed:                      # (n* the unpruned count: alpha 0 keeps every token)
    return profile, sol
  return profile, dataclasses.replace(
      sol, settings=dict(sol.settings, retimed_counts=sorted(retimed, reverse=True),
                         retimed_choices=path))


def _pooled(profile: records.Profile, batch: int, measured: Dict[int, timing.Measurement],
            full: int) -> records.Profile:
  """`profile` with each 'model' point at batch `batch` and a count `measured` holds timed again
  (the unpruned count `full` aside: the reference): its samples and the new ones scaled by
  L(full) profiled / re-timed, summarised together (analysed again: steps, lone counts); the
  point says so (`retimed_samples`, `retimed_scale`: the profile file marks it) and takes the
  re-timing's `measured_at` (its newest samples: a step against a count not timed again says
  its levels were timed apart, the scaling for the drift notwithstanding)."""
  model = {p.tokens: p for p in profile.points if (p.component, p.batch_size) == ("model", batch)}
  scale = model[full].median_s / measured[full].median
  points = []
  for p in profile.points:
    m = measured.get(p.tokens) if model.get(p.tokens) is p and p.tokens != full else None
    if m is not None:
      if p.retimed_samples:      # (one mark per point: a second pooling would misstate it)
        raise ValueError(f"the profile point of {p.tokens} tokens was already timed again")
      both = protocol.summarize(p.samples_s + tuple(s * scale for s in m.samples),
                                compile_s=p.compile_s, retries=p.retries)
      p = dataclasses.replace(p, median_s=both.median, q25_s=both.q25, q75_s=both.q75,
                              num_samples=len(both.samples), samples_s=both.samples,
                              retimed_samples=len(m.samples), retimed_scale=scale,
                              measured_at=m.measured_at or p.measured_at)
    points.append(p)
  return records.analyze(dataclasses.replace(profile, points=tuple(points)))


def paper_retime_note(settings: Dict[str, Any], n_star: int) -> str:
  """How the profile's L(n*) came to be, for the summary's `predicted_by`: pooled with a
  re-timing only where `retime_top_counts` timed n* again (a probe: --retime_top=0 wrote
  'counts re-timed with the unpruned graph, samples pooled' of a run that timed none)."""
  retimed = settings.get("retimed_counts") or []
  if int(n_star) in retimed:
    return "counts re-timed with the unpruned graph, samples pooled"
  if retimed:
    return f"n* {int(n_star)} itself not re-timed; other counts were"
  return "as profiled, not re-timed"


def retime_line(before: Solution, after: Solution) -> str:
  """What re-timing the counts of highest utility (`retime_top_counts`) did to n*."""
  retimed = after.settings.get("retimed_counts")
  n0, n1 = before.chosen.tokens, after.chosen.tokens
  if not retimed:
    return f"n* {n0} is the unpruned count: nothing to time again"
  i0 = after.curve["tokens"].index(n0)
  head = (f"re-timed the counts of highest utility ({', '.join(map(str, retimed))}) with the "
          "unpruned graph, samples pooled into the profile's: ")
  tail = ("" if n1 in retimed else f"; n* {n1} itself was not timed again within "
          f"{RETIME_ROUNDS} rounds")
  moves = [n0]              # n* round by round, repeats dropped (without `retimed_choices`,
  for n in after.settings.get("retimed_choices", [n1]):   # written before it: n0 and n1 only)
    if n != moves[-1]:
      moves.append(n)
  if n1 == n0:
    via = "" if len(moves) == 1 else f", by way of {' -> '.join(map(str, moves))}"
    return head + (f"n* {n0} holds{via} (L {1e3 * after.curve['latency_s'][i0]:.4f} ms "
                   "pooled)") + tail
  return head + (f"n* {' -> '.join(map(str, moves))} ({n0}: L "
                 f"{1e3 * before.chosen.predicted_latency_s:.4f} ms profiled, "
                 f"{1e3 * after.curve['latency_s'][i0]:.4f} ms pooled)") + tail


def _spread_mark(measured: Dict[Tuple[int, ...], timing.Measurement], a: Tuple[int, ...],
                 b: Tuple[int, ...]) -> str:
  """' (within the timing spread: ...)' when the graphs `a` and `b` were timed together and
  their medians differ by less than the larger IQR ('' otherwise): a choice by 0.2 % between
  graphs the verify stage then timed 3 % apart was printed as any other (a probe)."""
  if a not in measured or b not in measured:
    return ""
  ma, mb = measured[a], measured[b]
  return protocol.spread_mark(ma.median, ma.iqr, mb.median, mb.iqr)


def _timed(sol, counts) -> float:
  """The measured latency (s) of the schedule `counts` that `sol` checked in the loop."""
  return next(c.measured_latency_s for c in sol.checked if c.counts == counts)


@dataclasses.dataclass(frozen=True)
class Verification:
  """Stage 4: the unpruned and the chosen graph, timed and evaluated on the same images (those
  the choice was made on; `holdout`: also on the held-out ones, None without a holdout)."""
  unpruned: timing.Measurement
  pruned: timing.Measurement
  check: estimate_lib.EvalResult
  holdout: Optional[estimate_lib.EvalResult] = None


def _verify(cfg, params, spec, data, solution: Solution, log,
            holdout: Optional[estimate_lib.EvalData] = None) -> Verification:
  """The solution's graph as it deploys: its method with the options its accuracy was measured
  with (random drop's seed decides which tokens go: `Solution.method_kwargs`), on `data` and on
  the `holdout` images the choice never saw."""
  label = method_label(spec.method, spec.reducer_options())
  log(f"[4/4] verify: compile and time the unpruned and the {label} graphs, evaluate "
      "both on the same images" + ("" if holdout is None else
                                  f", and on the {len(holdout.indices)} held-out ones"))
  chosen = solution.schedule
  reducer = make_reducer(solution.method, **solution.reducer_options(spec.reducer_options()))
  unpruned = full_schedule(cfg)
  graphs = {"unpruned": (unpruned, None), spec.method: (chosen, reducer)}
  if chosen.counts == unpruned.counts:      # (--alpha=0: accuracy alone keeps them all)
    log("  the chosen schedule prunes nothing: it is the unpruned graph, timed once (its "
        "speed-up is 1 by definition, not a measurement of a graph against itself)")
    del graphs[spec.method]
  meas = _measure_graphs(cfg, params, graphs, _interleaved(spec))   # unpruned vs pruned, fairly
  meas.setdefault(spec.method, meas["unpruned"])
  point = estimate_lib.EvalPoint(chosen, reducer, chosen.counts[-1],
                                 chosen.reduction_layers[0] if chosen.reduction_layers else None)
  graphs_cache: Dict[Any, Any] = {}

  def check(images: estimate_lib.EvalData) -> estimate_lib.EvalResult:
    return estimate_lib.evaluate(
        cfg, params, images.batches(cfg, spec.eval_batch_size), [point],
        labelled=images.labelled, dtype=spec.dtype, threads=spec.threads, pieces=graphs_cache,
        whole_graphs=True,        # the graphs that are timed and deployed, not pieces
        margins=True)             # (per image: the paired interval of the change, paired_change)
  return Verification(meas["unpruned"], meas[spec.method], check(data),
                      None if holdout is None else check(holdout))


FEW_IMAGES = 30     # a choice on fewer images (and classes) is noted: 95% intervals of +-15 points


def run_pipeline(cfg: ViTConfig, params: Params, spec: PipelineSpec, out_dir: str, *,
                 weights_source: str, data: Optional[estimate_lib.EvalData] = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> Dict[str, Any]:
  """Runs the four stages for a trained classifier, then writes every output (profile,
  estimate, solution, `summary.json`) under `out_dir` -> the summary dict. `data`: the
  evaluation data if already loaded (else `spec.data`)."""
  if cfg.num_classes == 0:
    raise ValueError(f"{cfg.name} has no classifier head: the pipeline needs accuracy or "
                     "agreement of class predictions")
  spec.check(cfg)   # layer and tokens against the model, before any stage runs
  if data is None:           # labelled by the class names the weights record, as the CLI does
    data = load_data(spec, checkpoint.source_class_names(weights_source), cfg.num_classes)
  holdout = None
  if spec.holdout_images is not None:          # the choice is made on the others
    data, holdout = estimate_lib.holdout_split(data, spec.holdout_images, spec.seed)
  n = len(data.indices)
  # (a probe chose on 1 image: 1.0, then 0.508; unlabelled, the classes are not what is few)
  if n < (min(cfg.num_classes, FEW_IMAGES) if data.labelled else FEW_IMAGES):
    fewer = (f"fewer than the model's {cfg.num_classes} classes" if data.labelled else
             f"unlabelled, fewer than {FEW_IMAGES}")
    log(f"note: the choice rests on {console.counted(n, 'image')}, {fewer}: each measured "
        f"{default_metric(data.labelled)} is a count of {n} (steps of {1 / n:.3g})")
  tokens = spec.grid(cfg)
  latency_model = None
  seconds, clock = {}, time.perf_counter()
  # Which output folder this run replaces: one that another run publishes meanwhile is not
  # (two runs into one --out_dir both exited 0, the first one's printed files gone).
  replaces = atomic.output_stamp(os.path.abspath(out_dir))

  def lap(stage):
    nonlocal clock
    now = time.perf_counter()
    seconds[stage], clock = now - clock, now

  if spec.solver == "paper":
    profile = _profile(cfg, params, spec, tokens, progress, log)
  else:
    profile, latency_model = _calibrate(cfg, params, spec, tokens, log)
  lap("profile")
  pieces: Dict[Any, Any] = {}    # compiled model pieces: the estimate's, reused by the solve
  estimate = None
  try:
    estimate, margins = _estimate(cfg, params, spec, tokens, data, weights_source, log, pieces)
    lap("estimate")
    solution, profile = _solve(cfg, params, spec, data, profile, estimate, log, latency_model,
                               seconds, pieces, margins)
    lap("solve")
    verification = _verify(cfg, params, spec, data, solution, log, holdout)
    lap("verify")
    return write_outputs(out_dir, spec, data, weights_source, profile, estimate, solution,
                         verification, seconds, replaces=replaces)
  except Exception as failure:     # (not a Ctrl-C: an interrupted run writes nothing)
    try:
      kept = keep_measured(out_dir, spec, profile, estimate, log)
    except BaseException:      # (a signal while keeping: its line alone hid why the run failed)
      log(f"the run had failed ({console.one_line(failure)}); interrupted while keeping what "
          "it measured")
      raise
    if kept and estimate is None:      # (an image of --data that cannot be read, say)
      log(f"the estimate stage failed; the profile measured before it is kept in {kept} "
          "(experiments.solve reads it with an estimate of experiments.estimate)")
    elif kept:                 # (the output step too: a folder no longer ours, a full disk)
      log(f"the solve, verify or output stage failed; what the profile and estimate stages "
          f"measured is kept in {kept} ({_solve_again(kept, spec, profile, estimate)})")
    raise


def _solve_again(kept: str, spec: PipelineSpec, profile: records.Profile,
                 estimate: Estimate) -> str:
  """'solve them again: python -m experiments.solve --profile=... --estimate=... --mode=...':
  the command that solves what `keep_measured` kept into `kept` as the job did, shell-quoted
  (it said "experiments.solve reads it", and solve then refused the pair: the job evaluates at
  --eval_batch_size, not at the profile's batch; nor did it say the job's solver)."""
  flags = [f"--profile={os.path.join(kept, 'profile', records.file_stem(profile) + '.json')}",
           f"--estimate={os.path.join(kept, 'estimate', _estimate_name(spec, estimate))}",
           f"--mode={spec.solver}"]
  if spec.solver == "paper":
    flags += [f"--layer={spec.layer}", f"--method={spec.method}"]
  criteria = [f"--{name}={getattr(spec, name):g}" for name in
              ("accuracy_floor", "latency_budget", "max_accuracy_drop")
              if getattr(spec, name) is not None]
  flags += criteria or [f"--alpha={spec.alpha:g}"]     # (the utility only without a criterion)
  if spec.floor_confidence:
    flags.append("--floor_confidence")
  if estimate.eval_batch_size != spec.batch_size:
    flags.append("--allow_batch_mismatch")
  return ("solve them again: python -m experiments.solve "
          + " ".join(console.printable(shlex.quote(f)) for f in flags))


SUMMARY_FILE = "summary.json"
SUMMARY_FORMAT = "vitprune-pipeline"
_LAYOUT = {"profile", "estimate", "solve", SUMMARY_FILE}
_OUTPUT_EXTENSIONS = (".json", ".csv", ".png")     # what the stages write beside each listed file


def is_pipeline_dir(path: str) -> bool:
  """A pipeline output directory (ours to replace): a summary.json of our format (or from
  before the format marker: an object with its "files") and, in profile/, estimate/ and solve/,
  nothing but the files that summary lists and their companions (a profile's CSV: the same stem
  with another of the extensions we write). A file someone added anywhere in it (notes, another
  run's outputs), or a summary.json that is not ours, makes it not ours: it is never deleted."""
  try:
    names = {n for n in os.listdir(path) if not n.startswith(atomic.WRITE_CHECK_PREFIX)
             and n != atomic.INVENTORY_FILE}
  except OSError:
    return False
  if SUMMARY_FILE not in names or not names <= _LAYOUT:
    return False
  try:
    summary = jsonio.read_json(os.path.join(path, SUMMARY_FILE), "summary")
  except (OSError, ValueError):
    return False
  files = summary.get("files")            # read_json gives an object
  if summary.get("format", SUMMARY_FORMAT) != SUMMARY_FORMAT or not isinstance(files, dict):
    return False
  ours = set()
  for listed in files.values():
    if isinstance(listed, str):
      stem = os.path.splitext(os.path.basename(listed))[0]
      sub = os.path.basename(os.path.dirname(listed))
      ours.update((sub, stem + ext) for ext in _OUTPUT_EXTENSIONS)
  for sub in names - {SUMMARY_FILE}:
    folder = os.path.join(path, sub)
    if os.path.islink(folder) or not os.path.isdir(folder):
      return False
    with os.scandir(folder) as entries:
      if not all(e.is_file(follow_symlinks=False) and (sub, e.name) in ours for e in entries):
        return False
  return True


is_pipeline_dir.description = ("the main job's output (its summary.json, with profile/, "
                               "estimate/ and solve/)")


def _estimate_name(spec: PipelineSpec, estimate: Estimate) -> str:
  return (f"{estimate.config.name}_{estimate.method}_"
          f"{'embed' if spec.solver == 'paper' else 'layers'}.json")


def keep_measured(out_dir: str, spec: PipelineSpec, profile: records.Profile,
                  estimate: Optional[Estimate], log: Callable[[str], None] = print
                  ) -> Optional[str]:
  """After a later stage failed: the profile and the estimate (minutes of measurement; the
  profile alone when the estimate stage failed, `estimate` None) written to a new sibling
  `<out_dir>.partial-XXXX/` ({profile,estimate}/, as in an output directory)
  -> its path; None (logged) when even that cannot be written: staged and published whole, so
  it leaves nothing then (a full disk left a half-written folder per run). `out_dir` is left as
  it was."""
  out_dir = os.path.abspath(out_dir)
  kept = atomic.partial_name(out_dir)
  _cleanup_stale_keeps(out_dir)
  try:
    with atomic.staged_dir(kept, overwrite=False) as tmp:
      runner.write_outputs(profile, os.path.join(tmp, "profile"))
      if estimate is not None:
        write_estimate(os.path.join(tmp, "estimate", _estimate_name(spec, estimate)), estimate)
    return kept
  except (OSError, ValueError) as e:
    log(f"could not keep the profile and estimate measured so far: {e}")
    return None


def _cleanup_stale_keeps(out_dir: str) -> None:
  """The temporaries of `keep_measured` writers killed before they published (a fresh
  `<out_dir>.partial-XXXX` name each: no later keep of the same name finds them), removed
  by the next run that writes outputs or keeps them (ours only: `atomic.cleanup_stale`)."""
  parent, name = os.path.split(atomic.fitting_name(os.path.abspath(out_dir),
                                                   ".partial-" + "0" * 8))
  atomic.cleanup_stale_named(parent, name[:-8])


def write_outputs(out_dir: str, spec: PipelineSpec, data: estimate_lib.EvalData,
                  weights_source: str, profile: records.Profile, estimate: Estimate,
                  solution: Solution, verification: Verification,
                  seconds: Optional[Dict[str, float]] = None,
                  replaces: Any = atomic.ANY_OUTPUT) -> Dict[str, Any]:
  """The output step, one transaction: profile/, estimate/, solve/ and summary.json are written
  into a staged sibling of `out_dir` and published together (a killed run leaves the previous
  outputs whole, never a mix). `out_dir` is replaced only when it is a pipeline output (and,
  given `replaces`, the one stamped so when the run began: `atomic.staged_dir`).
  `seconds`: wall seconds per stage (profile, estimate, solve, in_loop within solve, verify)."""
  out_dir = os.path.abspath(out_dir)
  cfg = solution.config
  metric = default_metric(data.labelled)
  name = _estimate_name(spec, estimate)
  _cleanup_stale_keeps(out_dir)
  with atomic.staged_dir(out_dir, overwrite=True, is_ours=is_pipeline_dir,
                         replaces=replaces, keep_refused=False) as tmp:   # (keep_measured's)

    def final(path: str) -> str:   # where a staged file will be once published
      return os.path.join(out_dir, os.path.relpath(path, tmp))

    profile_paths = runner.write_outputs(profile, os.path.join(tmp, "profile"))
    estimate_path = write_estimate(os.path.join(tmp, "estimate", name), estimate)
    # The solution names the files it was solved from as published beside it (its records
    # carried the stages' placeholders, 'profile' and 'estimate_record').
    solution = dataclasses.replace(
        solution, profile=dataclasses.replace(solution.profile, path=final(profile_paths["json"])),
        estimate=dataclasses.replace(solution.estimate, path=final(estimate_path)))
    solution_paths = write_solution(solution, os.path.join(tmp, "solve"))
    v, chosen = verification, solution.chosen
    unpruned_chosen = tuple(chosen.counts) == tuple(full_schedule(cfg).counts)
    summary = {
        "format": SUMMARY_FORMAT, "version": 1,
        "model": cfg.name, "weights": weights_source, "device_kind": profile.device_kind,
        "platform": profile.platform, "batch_size": spec.batch_size, "dtype": spec.dtype,
        "data": spec.data, "num_images": int(len(data.indices)), "metric": metric,
        "solver": spec.solver,       # what chose: a floor, a budget, else alpha's utility
        # (with max_accuracy_drop the floor is the unpruned's measured metric minus it)
        "accuracy_floor": solution.settings.get("accuracy_floor"),
        "max_accuracy_drop": spec.max_accuracy_drop, "floor_confidence": spec.floor_confidence,
        "latency_budget": spec.latency_budget,
        "alpha": (spec.alpha if solution.settings.get("accuracy_floor") is None and
                  spec.latency_budget is None else None),
        "n_star": int(chosen.counts[-1]) if spec.solver == "paper" else None,
        "schedule": chosen.schedule, "counts": list(chosen.counts),
        "method": spec.method, "method_options": spec.reducer_options(),
        # what the choice rests on: the metric's basis, and the latency's (timed in the loop?)
        "basis": solution.basis,
        "latency_basis": solution.settings.get("latency_basis", "predicted"),
        "latency_source": solution.profile.latency_source,
        "predicted": {"latency_ms": 1e3 * chosen.predicted_latency_s,
                      metric: chosen.predicted_accuracy},
        # what made those predictions (paper mode's are measurements of other graphs standing
        # in for the chosen schedule: a probe read 'predicted' beside latency_source
        # 'measured' as a contradiction)
        "predicted_by": (
            "the paper's proxies at n*: the latency of the uniform n*-token graph as the "
            f"profile measured it ({paper_retime_note(solution.settings, chosen.counts[-1])}), "
            f"and the estimate's {metric} at n*" if spec.solver == "paper" else
            f"the solver's models: latency from the profile "
            f"({solution.profile.latency_source}), {metric} combined from the estimate's "
            "single-layer sensitivities"),
        # why the latency model of those predictions is not to be trusted (its error beyond
        # the limit), else None (a probe found it only in the solution and stdout)
        "latency_model_untrusted": solution.settings.get("latency_model_untrusted"),
        # the estimate's own measurement of the chosen schedule (a single reduction), if any
        "estimate_measured": _estimate_measured(estimate, metric, chosen.counts),
        "measured_in_loop": (None if chosen.measured_latency_s is None else
                             {"latency_ms": 1e3 * chosen.measured_latency_s,
                              metric: chosen.measured_accuracy}),
        "unpruned": {"counts": list(full_schedule(cfg).counts),
                     "latency_ms": 1e3 * v.unpruned.median,
                     "iqr_ms": 1e3 * v.unpruned.iqr,
                     metric: float(getattr(v.check.reference, metric))},
        "pruned": {"latency_ms": 1e3 * v.pruned.median,
                   "iqr_ms": 1e3 * v.pruned.iqr,
                   metric: float(getattr(v.check.points[0], metric)),
                   "agreement_with_unpruned": float(v.check.points[0].agreement),
                   "change": paired_change(v.check, metric, identical=unpruned_chosen)},
        "files": {"profile": final(profile_paths["json"]), "estimate": final(estimate_path),
                  "solution": final(solution_paths["json"]),
                  "solution_plot": final(solution_paths["png"]),
                  "profile_plot": final(profile_paths["png"])},
        "steps": [_summary_step(s) for s in profile.steps],
        "seconds": {k: round(v, 3) for k, v in (seconds or {}).items()},
    }
    summary["speedup"] = summary["unpruned"]["latency_ms"] / summary["pruned"]["latency_ms"]
    summary["holdout"] = holdout_summary(v.holdout, metric,
                                         solution.settings.get("accuracy_floor"),
                                         spec.max_accuracy_drop, identical=unpruned_chosen)
    atomic.write_json(os.path.join(tmp, SUMMARY_FILE), summary, indent=1)
  summary["files"]["summary"] = os.path.join(out_dir, SUMMARY_FILE)
  return summary


def paired_change(result: estimate_lib.EvalResult, metric: str, identical: bool = False
                  ) -> Dict[str, Any]:
  """The chosen graph's `metric` minus the unpruned one's on the same images (`result`: one
  point, evaluated with margins), with its 95 % interval (`intervals.change_record`: paired
  for accuracy; `identical`: the chosen graph is the unpruned one, [0, 0]) and the images each
  graph gets right and the other not."""
  pair = estimate_lib.paired_counts(result.margins[0], result.margins[1])
  n = result.reference.num_examples
  change = intervals.change_record(pair, metric, identical)
  got = float(getattr(result.points[0], metric)) - float(getattr(result.reference, metric))
  if sum(pair) != n or abs(got - change["value"]) > 1e-9:   # the margins are the metric's
    raise AssertionError(f"per-image margins give a change of {change['value']} on "
                         f"{sum(pair)} images, the {metric} {got} on {n}")
  return change


def holdout_summary(result: Optional[estimate_lib.EvalResult], metric: str,
                    floor: Optional[float], max_drop: Optional[float] = None,
                    identical: bool = False) -> Optional[Dict[str, Any]]:
  """summary.json's "holdout": the unpruned and the chosen graph's `metric` on the held-out
  images (None without them), the chosen one's Wilson 95 % interval for their number, and with
  a floor whether the measured value meets it ("floor_met") and where the interval lies
  ("floor_status": `solve_loop.interval_status`), and the change against the unpruned graph
  there (`paired_change`). With `max_drop` the floor there is the unpruned graph's measurement
  on the held-out images minus it ("floor"; `floor`, the one the choice met on its own images,
  is not used) and "floor_status" is where the paired interval of the change puts the chosen
  graph: pruned and unpruned compared on the same images."""
  if result is None:
    return None
  n = result.reference.num_examples
  pruned = float(getattr(result.points[0], metric))
  lo, hi = intervals.wilson_interval(pruned, n)
  out = {"num_images": int(n), "unpruned": {metric: float(getattr(result.reference, metric))},
         "pruned": {metric: pruned, "interval_95": [lo, hi],
                    "agreement_with_unpruned": float(result.points[0].agreement),
                    "change": paired_change(result, metric, identical)}}
  if max_drop is not None:
    floor = out["unpruned"][metric] - max_drop
    change_lo, change_hi = out["pruned"]["change"]["interval_95"]
    lo, hi = out["unpruned"][metric] + change_lo, out["unpruned"][metric] + change_hi
  if floor is not None:
    out["floor"] = floor
    out["floor_met"] = bool(solve.meets_floor(pruned, floor))
    out["floor_status"] = solve_loop.interval_status(lo, hi, floor)
  return out


def _describe_step(s: Dict[str, Any]) -> str:
  """A profile record's step (`records.analyze`) as `steps.Step.describe` words it."""
  return steps_lib.Step(s["n_from"], s["n_to"], s["latency_from_s"], s["latency_to_s"],
                        s["noise_s"], s["level_from"], s["level_to"],
                        tuple(s["measured_apart"])).describe()


def _summary_step(s: Dict[str, Any]) -> str:
  """The summary's words for a profile record's step: `_describe_step`'s, and where the grid
  timed no count between its two, that it lies somewhere there (the summary kept one-token
  steps only, and dropped a step the stage's lines had printed: a --tokens grid of every 4th
  count listed none)."""
  gap = s["n_from"] - s["n_to"]
  return _describe_step(s) + ("" if gap == 1 else f" (no count between {s['n_from']} and "
                                                  f"{s['n_to']} was timed: the step lies "
                                                  "somewhere in that gap)")


def _estimate_measured(estimate: Estimate, metric: str, counts) -> Optional[float]:
  """What `estimate` measured for exactly the schedule `counts` (None: it did not)."""
  value = estimate.measured(metric).get(tuple(int(c) for c in counts))
  return None if value is None else float(value)


def _single_reduction_note(s: Dict[str, Any]) -> str:
  """Of a multi-layer choice that reduces in at most one block: the estimate measured exactly
  that schedule (a probe read the prediction as a guess), and where the prediction differs, why
  (a probe: 0.9749 said to be the estimate's measurement, which was 0.9805)."""
  m = s["metric"]
  if solve.is_multi_reduction(s["counts"]):
    return ""
  measured = s.get("estimate_measured")           # (summaries before 2026-12-06: the loop's)
  if measured is None:
    measured = (s.get("measured_in_loop") or {}).get(m)
  if measured is None or abs(measured - s["predicted"][m]) < 1e-9:   # (A - (A - S): rounding)
    return f" (the {m} the estimate measured: it reduces in at most one block)"
  return (f" (the estimate measured {measured:.4f}: the solver's monotone envelope predicts no "
          f"block's reduction above the unpruned model or a larger count's)")


def format_summary(s: Dict[str, Any]) -> str:
  """The final table printed by `python -m experiments.profile`."""
  m = s["metric"]
  u, p = s["unpruned"], s["pruned"]
  lines = [
      f"== {s['model']} on {s['device_kind']} ({s['platform']}), batch {s['batch_size']}, "
      f"{s['dtype']}, {console.counted(s['num_images'], 'image')} of {s['data']}",
      (f"   chosen: n* = {s['n_star']} tokens (alpha {s['alpha']}) -> {s['method']} schedule "
       f"{s['schedule']}" if s["solver"] == "paper" else
       f"   chosen: multi-layer {s['method']} schedule {s['schedule']}"),
      (f"   paper proxies at n*: L(n*) {s['predicted']['latency_ms']:.4f} ms (all blocks at "
       f"n*), random-drop {m} {s['predicted'][m]:.4f}; measured:" if s["solver"] == "paper" else
       f"   solver predicted {s['predicted']['latency_ms']:.4f} ms, {m} "
       f"{s['predicted'][m]:.4f}" + _single_reduction_note(s) + "; measured:"),
      f"   {'graph':<10} {'tokens/layer':<28} {'latency ms':>11} {'IQR ms':>8} {m:>9}",
      f"   {'unpruned':<10} {str(u['counts']):<28} "
      f"{u['latency_ms']:>11.4f} {u['iqr_ms']:>8.4f} {u[m]:>9.4f}",
      f"   {s['method']:<10} {str(s['counts']):<28} {p['latency_ms']:>11.4f} "
      f"{p['iqr_ms']:>8.4f} {p[m]:>9.4f}",
      ("   nothing pruned: the chosen schedule is the unpruned graph (speed-up 1 by "
       "definition)" if s["counts"] == u["counts"] else
       f"   speedup x{s['speedup']:.2f}"
       + protocol.spread_mark(u["latency_ms"], u["iqr_ms"], p["latency_ms"], p["iqr_ms"])
       + f"; {m} change "
       + (intervals.describe_change(p["change"]) if "change" in p else f"{p[m] - u[m]:+.4f}")
       + f"; top-1 agreement with unpruned {p['agreement_with_unpruned']:.4f}"),
  ]
  budget, looped = s.get("latency_budget"), s.get("measured_in_loop")
  over_budget = budget is not None and looped and p["latency_ms"] > 1e3 * budget
  if s["solver"] == "multi" and looped and s["counts"] != u["counts"] and not over_budget:
    # (the table's timing is the verify stage's; the one the choice rested on was said only by
    # stage 3, 22 % apart from it in a probe, and summary.json held both unnamed)
    lines.append(f"   the choice rested on its in-loop timing, {looped['latency_ms']:.4f} ms: "
                 "another measurement than this table's")
  held = s.get("holdout")
  if held:
    hp, floor = held["pruned"], held.get("floor", s.get("accuracy_floor"))
    lines.append(
        f"   held out: {console.counted(held['num_images'], 'image')} the choice never saw: "
        f"unpruned "
        f"{held['unpruned'][m]:.4f}, {s['method']} {hp[m]:.4f} (95% interval "
        f"{hp['interval_95'][0]:.4f}..{hp['interval_95'][1]:.4f})"
        + ("" if floor is None else
           f"; floor {floor:.6g}"
           + ("" if s.get("max_accuracy_drop") is None else
              f" (the unpruned there - {s['max_accuracy_drop']:g})")
           + f" {'met' if held['floor_met'] else 'NOT met'} there"
           + {"meets": "", "fails": " (the whole {}interval is below it)",
              "straddles": " (the {}interval contains it)"}[held["floor_status"]].format(
                  "" if s.get("max_accuracy_drop") is None else "paired "))
        + ("\n   change against the unpruned graph there: "
           + intervals.describe_change(hp["change"]) if "change" in hp else ""))
  if budget is not None and s["counts"] != u["counts"]:    # (in the table, rows apart)
    lines.append(f"   {budget_cost_text(budget, m, p[m], u[m])} (measured here, on the same "
                 "images)")
  if over_budget:
    lines.append(f"   note: this timing of the chosen graph, {p['latency_ms']:.4f} ms, is over the "
                 f"budget of {1e3 * budget:.4g} ms it measured within in the loop "
                 f"({looped['latency_ms']:.4f} ms): two measurements differ by this machine's "
                 "noise")
  if s["steps"]:
    lines.append("   latency steps: " + "; ".join(s["steps"][:6]))
  t = s.get("seconds") or {}
  if t:
    lines.append("   wall seconds: " + ", ".join(
        f"{k} {v:.1f}" + (f" (in-loop timing {t['in_loop']:.1f})" if k == "solve" and
                          "in_loop" in t else "")
        for k, v in t.items() if k != "in_loop"))
  lines.append("   files: " + ", ".join(f"{k}={console.printable(v)}"
                                       for k, v in s["files"].items()))
  return "\n".join(lines)
