"""The solve stage: a `Profile` and an `Estimate` in, a `Solution` out (no files; jax is imported
only to ask the method's reducer for its per-block limit, `method_caps`).

The two records must describe the same model (name and config) and, unless
`allow_batch_mismatch`, the profile batch size used must equal the estimate's evaluation batch
size. Accuracy values are the estimate's metric ('accuracy' for labelled data, else 'agreement';
'kl' is lower-is-better and refused).

  paper mode (`solve_paper`): L(n) = the profile's whole-model curve at the batch size ("model"
    points; predicted from the per-block table when only that was profiled), A(n) = the
    estimate's curve (the row of `layer` in a sensitivity record, else tokens dropped after
    the embedding: a 'tokens' record or a sensitivity record's embed row, the paper's proxy).
  multi mode (`solve_multilayer`): the latency model of the compiled graph
    (`profile_latency_model`: fitted on a profile holding a uniform curve and calibration
    schedules, as the main job's --solver=multi writes) or else the per-block table
    (embed/block/head points; profile with --mode=block), and the per-layer sensitivity rows of
    the estimate (rows of integer layers; the after-embedding row is not a block reduction and
    is ignored), on the common token grid plus the full count. With an accuracy floor and an
    `evaluate` callback the floor is checked on the data: the choice then rests on measured
    accuracy (`Solution.basis == "measured"`), every measured candidate with its Wilson 95 %
    interval (`wilson_interval`, `floor_status`).
    With `latency_model` (`vitprune.profile.latency_model.LatencyModel`, calibrated on whole
    compiled graphs) the DP's costs come from it instead of the isolated per-block table, which
    over-predicts the compiled graph (`profile.latency_source == "calibrated-graph"`).
  in the loop (`check_in_loop`): the choice and its neighbours (frontier or measured) meeting the
    floor on measured accuracy are compiled and timed in one shuffled measurement (`time_schedules`
    callback) and the fastest measured one is chosen. With a latency budget instead
    (`check_budget_in_loop`): the choice and its neighbours are measured (accuracy and latency)
    and the most accurate one MEASURED within the budget is chosen.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from vitprune import schedule as schedule_lib
from vitprune import solve
from vitprune.config import ViTConfig, config_to_dict
from vitprune.profile import latency_model as latency_model_lib
from vitprune.profile import predict as predict_lib
from vitprune.profile import records
from vitprune.profile import steps as steps_lib
from vitprune.records.estimate import HIGHER_IS_BETTER, Estimate, EstimateError
from vitprune.intervals import change_interval, wilson_interval
from vitprune.records.solution import (BUDGET_PROVISIONAL, Candidate, EstimateRef, ProfileRef,
                                       Solution, judges_paired_change, measured_interval,
                                       meets_measured_floor)

# Measures schedules on the data: a list of counts -> their metric values, same order. A floor
# met with confidence also calls it with paired=True -> (values, per schedule the images it and
# the unpruned graph both get right, the unpruned only, it only, neither).
Evaluator = Callable[[Sequence[Tuple[int, ...]]], Sequence[float]]
# Compiles and times schedules (one shuffled measurement): a list of counts -> median seconds.
Timer = Callable[[Sequence[Tuple[int, ...]]], Sequence[float]]
LatencyModel = latency_model_lib.LatencyModel
# Per-example top-1 margins {counts: [M]} (`refine_accuracy`), or a function that measures them.
Margins = Union[Dict[Tuple[int, ...], np.ndarray], Callable[[], Dict[Tuple[int, ...], np.ndarray]]]


class SolveInputError(ValueError):
  """A profile and an estimate that cannot be used together (or at all)."""


# ----------------------------------------------------------------------------------------------
# Checking the inputs.

def check_same_model(profile: records.Profile, estimate: Estimate) -> ViTConfig:
  """The model config both records describe, computed in one dtype; SolveInputError naming both
  otherwise (an estimate written before it recorded its dtype passes)."""
  if profile.model != estimate.model:
    raise SolveInputError(f"profile {profile.source} is for model {profile.model!r} but "
                          f"estimate {estimate.source} is for model {estimate.model!r}")
  a = profile.config
  b = config_to_dict(estimate.config)
  if a != b:
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in diff)
    raise SolveInputError(f"profile {profile.source} and estimate {estimate.source} are both "
                          f"for {profile.model!r} but their configs differ ({shown})")
  if estimate.dtype and estimate.dtype != profile.dtype:
    raise SolveInputError(f"profile {profile.source} timed {profile.dtype} graphs but estimate "
                          f"{estimate.source} evaluated {estimate.dtype} ones: estimate (or "
                          f"profile) in one dtype (--dtype={profile.dtype})")
  return estimate.config


def check_held_out(estimate: Estimate) -> None:
  """SolveInputError when `estimate` measured the bundled digits' training images (`--split=train`
  or `all`): the model learned them, so every accuracy it reports overstates what a choice
  keeps on images it has not seen (the test split: 0.9749 unpruned, train 0.9951)."""
  selection = estimate.data.get("selection")
  split = selection.get("split") if isinstance(selection, dict) else None
  if split in ("train", "all"):
    raise SolveInputError(f"estimate {estimate.source} measured the digits' {split} split, which "
                          "models of the digits are trained on: its accuracies overstate the "
                          "model's; estimate with --split=test")


# The profile curves each mode solves on (multi mode: without a calibrated latency model).
MODE_COMPONENTS = {"paper": ("model", "block"), "multi": ("block",)}


def profile_latency_model(profile: records.Profile, estimate: Estimate,
                          batch_size: Optional[int] = None, allow_batch_mismatch: bool = False
                          ) -> Optional[Tuple[int, LatencyModel]]:
  """(batch, the latency model of the compiled graph fitted on `profile`) when it holds a
  uniform curve ('model' points) and calibration schedules ('schedule' points) of the
  estimate's method, as the main job's `--solver=multi` profile does; None otherwise (multi
  mode then reads the per-block table, which a `--mode=schedule` profile holds too).
  SolveInputError (one line) for schedules of another reducer or a curve `fit` cannot use."""
  comps = {p.component for p in profile.points}
  if not {"schedule", "model"} <= comps:   # a --mode=schedule profile: its block table is used
    return None
  timed = latency_model_lib.schedule_method(profile)
  if estimate.method.lower() != timed.lower():
    raise SolveInputError(f"profile {profile.source} timed {timed!r} schedules (reducer "
                          f"{profile.reducer!r}), estimate {estimate.source} is of method "
                          f"{estimate.method!r}: calibrate with the estimate's method "
                          f"(python -m experiments.profile --solver=multi "
                          f"--method={estimate.method}) or profile with --mode=block")
  batch = resolve_batch(profile, estimate, batch_size, ("schedule",), allow_batch_mismatch)
  num = sum(latency_model_lib.reduces(p.schedule) for p in profile.curve("schedule", batch))
  if num < latency_model_lib.MIN_CALIBRATION_SCHEDULES:
    raise SolveInputError(f"profile {profile.source} holds {num} calibration schedule(s) that "
                          f"reduce at batch {batch}; the latency model needs >= "
                          f"{latency_model_lib.MIN_CALIBRATION_SCHEDULES} (one per reduction "
                          f"term)")
  try:
    return batch, latency_model_lib.fit(profile, batch_size=batch, method=estimate.method)
  except ValueError as e:      # CalibrationError, or a schedule outside the measured curve
    raise SolveInputError(f"profile {profile.source}: its calibration schedules cannot be "
                          f"fitted ({e})") from None


def resolve_batch(profile: records.Profile, estimate: Estimate, batch_size: Optional[int],
                  components: Tuple[str, ...], allow_batch_mismatch: bool = False) -> int:
  """The profile batch size to solve for, checked against the estimate's evaluation batch."""
  have = sorted({p.batch_size for p in profile.points if p.component in components})
  if not have:
    kinds = sorted({p.component for p in profile.points})
    hint = ("; multi mode needs a per-block table (experiments.profile --mode=block) or the "
            "main job's --solver=multi profile (its calibration schedules)"
            if components == MODE_COMPONENTS["multi"] else "")
    raise SolveInputError(f"profile {profile.source} has no {'/'.join(components)} points "
                          f"(it holds {'/'.join(kinds) or 'none'}){hint}")
  eval_batch = estimate.eval_batch_size
  if batch_size is None:
    if len(have) == 1:
      batch_size = have[0]
    elif eval_batch in have:
      batch_size = eval_batch
    else:
      raise SolveInputError(f"profile {profile.source} has batch sizes {have}; pass "
                            f"batch_size / --batch_size (the estimate {estimate.source} was "
                            f"evaluated at batch {eval_batch})")
  if batch_size not in have:
    raise SolveInputError(f"profile {profile.source} has no {'/'.join(components)} points at "
                          f"batch size {batch_size} (has {have})")
  if batch_size != eval_batch and not allow_batch_mismatch:
    raise SolveInputError(f"batch sizes differ: profile {profile.source} at batch {batch_size}, "
                          f"estimate {estimate.source} at batch {eval_batch} (pass "
                          f"allow_batch_mismatch / --allow_batch_mismatch to combine them)")
  return int(batch_size)


def resolve_metric(estimate: Estimate, metric: Optional[str]) -> str:
  try:
    return estimate.metric(metric, higher_is_better=True)
  except EstimateError as e:
    raise SolveInputError(str(e)) from None


def _finite(values: np.ndarray, what: str, source: str, tokens: np.ndarray) -> np.ndarray:
  bad = ~np.isfinite(values)
  if bad.any():
    raise SolveInputError(f"{source}: {what} is NaN/inf at token counts "
                          f"{tokens[bad].tolist()[:10]}")
  return values


def _curve(profile: records.Profile, component: str, batch: int):
  """(tokens int64 [P] ascending, median [P], iqr [P], samples [P]) of one profile curve."""
  pts = sorted(profile.curve(component, batch), key=lambda p: p.tokens)
  t = np.array([p.tokens for p in pts], np.int64)
  med = _finite(np.array([p.median_s for p in pts], np.float64), f"{component} latency",
                profile.source, t)
  iqr = _finite(np.array([p.iqr_s for p in pts], np.float64), f"{component} IQR",
                profile.source, t)
  return t, med, iqr, np.array([p.num_samples for p in pts], np.float64)


def _block_table(profile: records.Profile, batch: int):
  table = records.block_table(profile, batch)
  if table is None:
    return None
  for name, vals in (("embed", [table.embed_s]), ("block", list(table.block_s.values())),
                     ("head", list(table.head_s.values()))):
    if not np.all(np.isfinite(vals)):
      raise SolveInputError(f"{profile.source}: {name} latency has NaN/inf values")
  return table


def latency_curve(profile: records.Profile, cfg: ViTConfig, batch: int
                  ) -> Tuple[np.ndarray, np.ndarray, str]:
  """Whole-model L(n): (tokens [P], seconds [P], source) from measured 'model' points, else
  predicted by the per-block table. A `--mode=block` profile's 'model' points are the three
  checks of its predictor (largest, middle, smallest count), not a curve: its table is used
  (taking them for the curve left paper mode 3 of the grid's counts to choose from)."""
  table = _block_table(profile, batch)
  if profile.curve("model", batch) and ("model" in profile.modes or table is None):
    t, med, _, _ = _curve(profile, "model", batch)
    return t, med, "measured"
  if table is None:
    raise SolveInputError(f"profile {profile.source} has neither a whole-model curve nor a "
                          f"complete per-block table at batch {batch}")
  tokens = sorted(set(table.block_s) & set(table.head_s))
  pred = predict_lib.predict_curve(table, cfg.depth, tokens)
  return (np.array(tokens, np.int64), np.array([pred[n] for n in tokens]),
          "predicted_from_blocks")


def _profile_ref(profile: records.Profile, batch: int, latency_source: str) -> ProfileRef:
  return ProfileRef(path=profile.source,
                    sha256=records.measurement_sha256(profile),
                    device_kind=profile.device_kind, platform=profile.platform,
                    dtype=profile.dtype, batch_size=batch, latency_source=latency_source)


def _estimate_ref(estimate: Estimate, metric: str, layers: Sequence[Optional[int]]
                  ) -> EstimateRef:
  return EstimateRef(path=estimate.source, sha256=estimate.sha256(), kind=estimate.kind,
                     method=estimate.method, metric=metric, layers=tuple(layers),
                     eval_batch_size=estimate.eval_batch_size,
                     weights_sha256=estimate.weights_sha256,
                     data_fingerprint=estimate.data_fingerprint,
                     method_kwargs=dict(estimate.method_kwargs))


def _reported(accuracy: float) -> float:
  """A predicted accuracy as reported: within [0, 1] (a raw, `--nomonotone` table can add up to
  more than 1: the edited estimate of a fault probe predicted 1.24; capped multi-reduction plans
  can sum their drops below 0; choices are the same either way, floors being in [0, 1])."""
  return min(max(float(accuracy), 0.0), 1.0)


def _candidate(cfg: ViTConfig, counts: Sequence[int], latency: float, accuracy: float,
               **extra) -> Candidate:
  """A schedule with its predictions (the accuracy `_reported`)."""
  counts = tuple(int(c) for c in counts)
  return Candidate(counts=counts,
                   schedule=schedule_lib.format_schedule(schedule_lib.Schedule(counts), cfg),
                   predicted_latency_s=float(latency), predicted_accuracy=_reported(accuracy),
                   **extra)


def _as_estimate_measured(c: Candidate, estimate: Estimate, metric: str) -> Candidate:
  """`c` with the estimate's measurement of exactly its schedule, where the estimate measured
  it (the unpruned schedule: its reference; paper mode: the curve's rows at the chosen block):
  measured metric and Wilson interval over the estimate's images. A predicted number stays
  predicted; a measured one said so (the unpruned accuracy was stored as predicted only)."""
  value = estimate.measured(metric).get(c.counts)
  if value is None or c.measured_accuracy is not None or metric not in HIGHER_IS_BETTER:
    return c
  return _measured(c, value, estimate.reference.num_examples)


def _now() -> str:
  return records.now_iso()


# ----------------------------------------------------------------------------------------------
# Paper mode.

def paper_lowest(cfg, method: str) -> int:
  """The lowest count `method` reaches in one block from all N tokens."""
  n = cfg.num_tokens
  return max(n - latency_model_lib.method_limit(cfg, method)(n), cfg.num_prefix_tokens + 1)


def check_paper_grid(cfg, method: str, counts: Sequence[int], *, measure_in: str = "too"
                     ) -> None:
  """SolveInputError when `counts` hold no count below N that `method` reaches in one block:
  paper mode would have nothing to choose but the unpruned model. `measure_in` ends the advice
  (where the missing counts belong)."""
  n, lowest = cfg.num_tokens, paper_lowest(cfg, method)
  if not any(lowest <= c < n for c in counts):
    raise SolveInputError(f"no count below the full {n} that {method} reaches in one block "
                          f"(from {n} it keeps at least {lowest}): paper mode has nothing to "
                          f"choose; measure counts in [{lowest}, {n - 1}] {measure_in}")


def solve_paper(profile: records.Profile, estimate: Estimate, *, alpha: float = 0.5,
                layer: int = 3, batch_size: Optional[int] = None,
                metric: Optional[str] = None, method: Optional[str] = None,
                allow_batch_mismatch: bool = False) -> Solution:
  """The paper's n* = argmax U(n) and the POMT schedule reducing to n* at block `layer`."""
  cfg = check_same_model(profile, estimate)
  batch = resolve_batch(profile, estimate, batch_size, MODE_COMPONENTS["paper"],
                        allow_batch_mismatch)
  metric = resolve_metric(estimate, metric)
  lt, lat, source = latency_curve(profile, cfg, batch)
  if layer in estimate.layers:
    est_layer = layer
  elif None in estimate.layers:   # the paper's proxy: tokens dropped after the embedding (a
    est_layer = None               # 'tokens' estimate, or a sensitivity table's embed row)
  else:            # another block's curve would be read as block `layer`'s accuracy
    raise SolveInputError(f"estimate {estimate.source} has layers "
                          f"{['embed' if l is None else l for l in estimate.layers]}; paper "
                          f"mode at block {layer} needs one with layer {layer} or an embed "
                          "row (tokens dropped after the embedding, the paper's proxy)")
  at, acc = estimate.curve(metric, layer=est_layer)
  # Both grids prune, but never to the same count (where one does not, `check_paper_grid`
  # below says what to measure).
  below = [np.asarray(g)[np.asarray(g) < cfg.num_tokens] for g in (lt, at)]
  if all(b.size for b in below) and not np.intersect1d(*below).size:
    raise SolveInputError(f"profile {profile.source} (counts {min(lt)}..{max(lt)}) and estimate "
                          f"{estimate.source} (counts {at.min()}..{at.max()}) share no token "
                          f"count below the full {cfg.num_tokens}: paper mode has nothing to "
                          "choose")
  if cfg.num_tokens not in at:       # the unpruned model: the estimate's reference, measured
    at = np.append(at, cfg.num_tokens)                   # (the main job's multi estimate)
    acc = np.append(acc, estimate.reference.get(metric))
  try:
    ns, lat_c, acc_c = solve.intersect_grid(lt, lat, at, acc)
  except ValueError as e:
    raise SolveInputError(f"profile {profile.source} and estimate {estimate.source}: {e}"
                          ) from None
  if cfg.num_tokens not in ns:        # (the utility's scale was the grid's own best, and a
    raise SolveInputError(            # one-count grid was "chosen" whatever it measured)
        f"profile {profile.source} has no point at the full {cfg.num_tokens} tokens: paper "
        f"mode weighs every count against the unpruned model; measure {cfg.num_tokens} in it")
  if method is None:
    method = "pomt" if est_layer is None else estimate.method
  try:                         # the reducers' registry names the valid methods
    limit = latency_model_lib.method_limit(cfg, method)
  except ValueError as e:
    raise SolveInputError(str(e)) from None
  method = method.strip().lower()
  if est_layer is not None and method != estimate.method.strip().lower():
    # (top-k's measured accuracy at block 3 was reported as the pomt schedule's)
    raise SolveInputError(f"method {method!r}: estimate {estimate.source} measured "
                          f"{estimate.method!r} at block {layer}, so its accuracies are that "
                          f"method's; pass --method={estimate.method}, or an embed ('tokens') "
                          "estimate, whose random drop stands in for any method")
  # (only N left: "chose" the unpruned model and timed it against itself)
  lowest = paper_lowest(cfg, method)
  lacking = [f"{kind} {src}" for kind, src, grid in (("profile", profile.source, lt),
                                                       ("estimate", estimate.source, at))
             if not any(lowest <= c < cfg.num_tokens for c in grid)]
  check_paper_grid(cfg, method, ns.tolist(), measure_in=(
      "in " + " and ".join(lacking) if lacking else "in both the profile and the estimate"))
  unused = _unused_estimate_counts(estimate, ns)     # (before the cap: the profile lacks them)
  keep = ns >= cfg.num_tokens - limit(cfg.num_tokens)   # block `layer` reduces from all N
  capped = sorted(int(n) for n in ns[~keep])    # (dropped unsaid: ToMe's 20 -> 10 step shown)
  ns, lat_c, acc_c = ns[keep], lat_c[keep], acc_c[keep]
  sol = solve.solve_paper(ns, lat_c, acc_c, alpha, depth=cfg.depth, num_tokens=cfg.num_tokens,
                          layer=layer)
  table = _block_table(profile, batch)
  sched_lat = None
  if table is not None:
    try:
      sched_lat = predict_lib.predict(table, schedule_lib.Schedule(sol.counts))
    except KeyError:
      sched_lat = None

  def at_count(i):
    counts = solve.pomt_counts(cfg.num_tokens, int(sol.ns[i]), cfg.depth, layer)
    return _as_estimate_measured(_candidate(cfg, counts, sol.latency[i], sol.accuracy[i],
                                            tokens=int(sol.ns[i])), estimate, metric)

  full = [i for i in range(sol.ns.size) if sol.ns[i] == cfg.num_tokens]
  return Solution(
      mode="paper", config=cfg, profile=_profile_ref(profile, batch, source),
      estimate=_estimate_ref(estimate, metric, [est_layer]),
      settings={"alpha": sol.alpha, "layer": layer, "metric": metric,
                "allow_batch_mismatch": allow_batch_mismatch,
                **({"unused_estimate_counts": unused} if unused else {}),
                **({"capped_counts": capped} if capped else {})},
      chosen=_as_estimate_measured(_candidate(cfg, sol.counts, sol.latency_star,
                                              sol.accuracy_star, tokens=int(sol.n_star)),
                                   estimate, metric),
      method=method, criterion="utility",
      full=(_as_estimate_measured(_candidate(cfg, (cfg.num_tokens,) * (cfg.depth + 1),
                                             sol.latency[full[0]], sol.accuracy[full[0]]),
                                  estimate, metric) if full else None),
      frontier=tuple(at_count(i) for i in solve.nondominated(sol.latency, sol.accuracy,
                                                             sol.ns)),
      created=_now(), utility=float(sol.utility_star), schedule_latency_s=sched_lat,
      curve={"tokens": sol.ns.tolist(), "latency_s": sol.latency.tolist(),
             "accuracy": sol.accuracy.tolist(), "utility": sol.utility.tolist()})


# ----------------------------------------------------------------------------------------------
# Multi-layer mode.

def _unused_estimate_counts(estimate: Estimate, ns: np.ndarray) -> List[int]:
  """The estimate's token counts (one grid for all its layers) the solver's grid `ns` left out
  (measured accuracy unused: the profile lacks them, or the latency model was not calibrated
  there)."""
  return sorted({int(n) for n in estimate.tokens} - {int(n) for n in ns})


@dataclasses.dataclass(frozen=True, eq=False)
class MultiInputs:
  """Arrays for `solve.solve_multilayer` on the common grid ns [K] (ascending, ends at N)."""
  ns: np.ndarray
  block: np.ndarray
  head: Any            # float or [K]
  embed: float
  layers: Tuple[int, ...]
  sensitivity: np.ndarray   # [len(layers), K]
  full_accuracy: float
  pair_noise: Optional[np.ndarray]   # [K - 1] s, k * max(pair SE, curve noise); None: unknown
  reduce: Optional[np.ndarray] = None   # [K] extra seconds of a reducing block (None: 0)


def _sensitivity_rows(estimate: Estimate, metric: str):
  est_layers, tokens, values = estimate.table(metric)
  rows = [(l, r) for r, l in enumerate(est_layers) if l is not None]
  if not rows:
    raise SolveInputError(f"estimate {estimate.source} has no per-layer sensitivity (layers "
                          f"{est_layers}: only drops after the embedding); estimate with "
                          f"reduction layers for multi mode")
  return rows, tokens, values


def _sensitivity(estimate: Estimate, metric: str, ns: np.ndarray, rows, tokens, values):
  full_acc = float(estimate.reference.get(metric))
  pos = {int(n): i for i, n in enumerate(tokens)}
  sens = np.array([[values[r, pos[int(n)]] if int(n) in pos else full_acc for n in ns[:-1]]
                   + [full_acc] for _, r in rows])
  return sens, full_acc


def check_latency_model(lm: LatencyModel, profile: records.Profile, cfg: ViTConfig,
                        batch: int) -> None:
  """SolveInputError (one line) unless `lm` was calibrated for this model, device, platform,
  dtype and batch size."""
  diff = records.setup_mismatch(lm, profile)
  if diff is None and lm.batch_size != batch:
    diff = ("batch size", lm.batch_size, batch)
  if diff:
    raise SolveInputError(f"the latency model was calibrated for {diff[0]} {diff[1]!r}, the "
                          f"profile {profile.source} is for {diff[2]!r}")


def model_multilayer_inputs(lm: LatencyModel, profile: records.Profile, estimate: Estimate,
                            cfg: ViTConfig, batch: int, metric: str, step_k: float = 4.0
                            ) -> MultiInputs:
  """The DP's arrays from a calibrated `LatencyModel` (per-count in-graph block cost, reduce
  cost, head cost at the final count, constant) and the sensitivity rows, on the estimate's
  grid inside the model's measured curve (+ N)."""
  check_latency_model(lm, profile, cfg, batch)
  rows, tokens, values = _sensitivity_rows(estimate, metric)
  n_full = cfg.num_tokens
  common = {int(n) for n in tokens.tolist() if lm.tokens[0] <= int(n) < n_full}
  if not common:
    raise SolveInputError(f"the latency model (curve {lm.tokens[0]}..{lm.tokens[-1]}) and "
                          f"estimate {estimate.source} share no token count below {n_full}")
  ns = np.array(sorted(common) + [n_full], np.int64)
  sens, full_acc = _sensitivity(estimate, metric, ns, rows, tokens, values)
  arr = lm.dp_arrays(ns)
  # Step noise of the in-graph block cost: the uniform curve's, per block.
  pts = {p.tokens: p for p in profile.curve("model", batch)}
  if all(int(n) in pts for n in ns):
    med = np.array([pts[int(n)].median_s for n in ns])
    iqr = np.array([pts[int(n)].iqr_s for n in ns])
    cnt = np.array([pts[int(n)].num_samples for n in ns], np.float64)
    noise = step_k * np.maximum(steps_lib.pair_noise(iqr, cnt),
                                steps_lib.curve_noise(med, ns))
    noise = noise * lm.params["scale"] / cfg.depth
  else:
    noise = None
  return MultiInputs(ns=ns, block=arr["block"], head=arr["head"], embed=arr["embed"],
                     layers=tuple(l for l, _ in rows), sensitivity=sens, full_accuracy=full_acc,
                     pair_noise=noise, reduce=arr["reduce"])


def multilayer_inputs(profile: records.Profile, estimate: Estimate, cfg: ViTConfig, batch: int,
                      metric: str, step_k: float = 4.0) -> MultiInputs:
  """Aligns the per-block table and the sensitivity table on their common grid (+ N) (the
  isolated per-block table: a diagnostic baseline; it over-predicts the compiled graph)."""
  table = _block_table(profile, batch)
  if table is None:
    raise SolveInputError(f"profile {profile.source} has no complete per-block table (embed, "
                          f"block and head points) at batch {batch}; profile with --mode=block")
  n_full = cfg.num_tokens
  if n_full not in table.block_s:
    raise SolveInputError(f"profile {profile.source}: the per-block table lacks the full count "
                          f"{n_full} (block 0 always sees all tokens)")
  rows, tokens, values = _sensitivity_rows(estimate, metric)
  head_single = len(table.head_s) == 1
  if not head_single and n_full not in table.head_s:      # (a KeyError: 17)
    raise SolveInputError(f"profile {profile.source}: the per-block table's head points lack "
                          f"the full count {n_full} (the unpruned schedule's head sees all "
                          f"tokens); profile it with --mode=block")
  common = set(table.block_s) & set(tokens.tolist())
  if not head_single:
    common &= set(table.head_s)
  common.discard(n_full)
  if not common:
    raise SolveInputError(f"profile {profile.source} (block counts {min(table.block_s)}.."
                          f"{max(table.block_s)}) and estimate {estimate.source} (tokens "
                          f"{tokens.min()}..{tokens.max()}) share no token count below "
                          f"{n_full}")
  ns = np.array(sorted(common) + [n_full], np.int64)
  sens, full_acc = _sensitivity(estimate, metric, ns, rows, tokens, values)
  bt, bmed, biqr, bcnt = _curve(profile, "block", batch)
  bpos = {int(n): i for i, n in enumerate(bt)}
  sel = [bpos[int(n)] for n in ns]
  med, iqr, cnt = bmed[sel], biqr[sel], bcnt[sel]
  noise = step_k * np.maximum(steps_lib.pair_noise(iqr, cnt),
                              steps_lib.curve_noise(med, ns))
  # Each separately timed part holds one per-call overhead, the whole forward pays it once: keep
  # it in the embedding, take it out of the blocks and the head (as predict.predict does).
  ovh = float(table.overhead_s)
  head = (float(next(iter(table.head_s.values()))) - ovh if head_single
          else np.array([table.head_s[int(n)] for n in ns]) - ovh)
  return MultiInputs(ns=ns, block=np.maximum(med - ovh, 0.0), head=np.maximum(head, 0.0),
                     embed=float(table.embed_s), layers=tuple(l for l, _ in rows),
                     sensitivity=sens, full_accuracy=full_acc, pair_noise=noise)


def method_caps(cfg: ViTConfig, method: str, ns: np.ndarray) -> Optional[np.ndarray]:
  """[K] the most tokens `method` may remove in one block from each count of ns
  (`TokenReducer.max_remove`; None for a method vitprune does not know)."""
  try:
    limit = latency_model_lib.method_limit(cfg, method)
  except ValueError:
    return None
  return np.array([limit(int(n)) for n in ns], np.int64)


def check_accuracy_drop(drop: float, name: str = "max_accuracy_drop") -> float:
  """`drop` as a float in [0, 1] (the metric's own unit: 0.01 is one point); ValueError naming
  `name` otherwise."""
  value = float(drop)
  if not 0.0 <= value < 1.0:        # (NaN fails too; at 1 every schedule would meet it)
    raise ValueError(f"{name} must be in [0, 1) (the metric's unit: 0.01 is one point), "
                     f"got {drop}")
  return value


def floor_below_unpruned(unpruned: float, drop: float, metric: str) -> float:
  """The accuracy floor `drop` below the unpruned schedule's measured `metric` (`unpruned`,
  the estimate's, on the images it measured): a floor relative to the model, so the choice
  and a later check on other images compare pruned and unpruned on the same images.
  SolveInputError when the floor would be below 0."""
  drop = check_accuracy_drop(drop)
  floor = float(unpruned) - drop
  if floor <= 0.0 < drop:
    raise SolveInputError(f"max_accuracy_drop {drop:g} is at least the unpruned {metric} "
                          f"{unpruned:.4f} measured on the estimate's images: every schedule "
                          "meets it; give a smaller drop")
  return floor


def check_one_frontier_measurement(measure_all: bool, refine_rounds: int,
                                   names: Tuple[str, str]) -> None:
  """SolveInputError (a ValueError) where both are asked for: both measure the whole
  uncorrected frontier (the refinement in its round 0; measured first, the frontier left the
  refinement's round 0 nothing to measure, and the uncorrected model's error on it went
  unreported). `names`: how the caller names the two (arguments or flags). The pipeline and the
  CLIs refuse the pair; `solve_multilayer` runs both (round 0 then measures nothing new)."""
  if measure_all and refine_rounds:
    raise SolveInputError(f"{names[0]} and {names[1]} both measure the whole uncorrected "
                          "frontier (the refinement in its round 0): give one")


def solve_multilayer(profile: records.Profile, estimate: Estimate, *,
                     accuracy_floor: Optional[float] = None,
                     latency_budget: Optional[float] = None, alpha: float = 0.5,
                     max_accuracy_drop: Optional[float] = None,
                     floor_confidence: bool = False,
                     batch_size: Optional[int] = None, metric: Optional[str] = None,
                     accuracy_model: str = "incremental", monotone: bool = True,
                     step_bottoms_only: bool = False, step_k: float = 4.0,
                     allow_batch_mismatch: bool = False,
                     evaluate: Optional[Evaluator] = None, chunk: int = 6,
                     latency_model: Optional[LatencyModel] = None,
                     num_images: Optional[int] = None, measure_all: bool = False,
                     refine_rounds: int = 0,
                     margins: Optional[Margins] = None,
                     loop_neighbours: Optional[int] = None) -> Solution:
  """The exact multi-layer Pareto frontier and the schedule chosen on it.

  Latency: with `latency_model` (`vitprune.profile.latency_model`, calibrated on whole compiled
  graphs) the DP's costs come from it (`profile.latency_source == "calibrated-graph"`); without,
  from the isolated per-block table ("blocks": it over-predicts the compiled graph). Every
  latency in the solution is still a prediction (`predicted_latency_s`).
  With `accuracy_floor` and `evaluate` (schedules -> metric measured on the data), the floor is
  checked on measurements (`check_floor`) and the solution rests on them. `max_accuracy_drop`
  (instead of a floor) sets the floor at the unpruned schedule's measured metric minus it
  (`floor_below_unpruned`; settings keep both). `floor_confidence` (needs `evaluate` and a
  floor or a drop): a schedule meets the floor only when its whole 95 % interval does (with a
  drop, the paired interval of its change against the unpruned graph; `meets_measured_floor`),
  so the choice carries the uncertainty of the number of images. With `measure_all`
  (needs `evaluate`) every frontier schedule is measured first (`measure_frontier`); without a
  floor the budget or utility choice is then made on those measurements
  (`choose_on_measurements`). With
  `refine_rounds` > 0 (needs `evaluate`) the accuracy model is corrected from measured frontier
  schedules and the frontier re-solved, up to that many times (`refine_accuracy`); `margins`
  ({counts: [M] per-example top-1 margins} of the estimate's single reductions and the
  unpruned schedule, on the images `evaluate` measures, in its order; or a function measuring
  them, called only once the refinement starts) adds the anchored per-image prediction to each
  round's report.
  """
  if measure_all and evaluate is None:
    raise SolveInputError("measuring the whole frontier needs an evaluator (weights and data)")
  if floor_confidence and (evaluate is None or (accuracy_floor is None and
                                                 max_accuracy_drop is None)):
    raise SolveInputError("floor_confidence judges measured intervals against a floor: it needs "
                          "an accuracy floor or a maximum drop, and an evaluator (weights and "
                          "data)")
  if max_accuracy_drop is not None and (accuracy_floor is not None or
                                        latency_budget is not None):
    raise ValueError("give a maximum accuracy drop, an accuracy floor or a latency budget, "
                     "not two")
  if refine_rounds and evaluate is None:
    raise SolveInputError("refining the accuracy model measures schedules: it needs an "
                          "evaluator (weights and data)")
  cfg = check_same_model(profile, estimate)
  components = ("model",) if latency_model is not None else MODE_COMPONENTS["multi"]
  batch = resolve_batch(profile, estimate,
                        latency_model.batch_size if latency_model is not None and
                        batch_size is None else batch_size, components, allow_batch_mismatch)
  metric = resolve_metric(estimate, metric)
  if latency_model is not None:
    inp = model_multilayer_inputs(latency_model, profile, estimate, cfg, batch, metric, step_k)
    source = latency_model.source
  else:
    inp = multilayer_inputs(profile, estimate, cfg, batch, metric, step_k)
    source = "blocks"
  if step_bottoms_only and inp.pair_noise is None:   # every count would pass as a bottom
    missing = sorted({int(n) for n in inp.ns} - {p.tokens for p in profile.curve("model", batch)})
    raise SolveInputError(f"step_bottoms_only / --step_bottoms_only needs the step noise of "
                          f"the uniform curve at every count of the grid, but profile "
                          f"{profile.source} did not measure the curve at {missing}; "
                          f"profile those counts or drop step_bottoms_only")
  if accuracy_floor is not None and latency_budget is not None:
    raise ValueError("give either an accuracy floor or a latency budget, not both")
  if max_accuracy_drop is not None:
    accuracy_floor = floor_below_unpruned(inp.full_accuracy, max_accuracy_drop, metric)
  sol = solve.solve_multilayer(
      inp.ns, inp.block, inp.sensitivity, inp.full_accuracy, depth=cfg.depth,
      num_tokens=cfg.num_tokens, layers=inp.layers, embed_latency=inp.embed,
      head_latency=inp.head, reduce_latency=inp.reduce, accuracy_model=accuracy_model,
      monotone=monotone, step_bottoms_only=step_bottoms_only, pair_noise=inp.pair_noise,
      latency_budget=latency_budget if evaluate is None else None, alpha=alpha,
      max_remove=method_caps(cfg, estimate.method, inp.ns))
  provisional = None
  if latency_budget is not None and evaluate is not None:
    try:
      chosen, criterion = solve.choose(sol.frontier, latency_budget=latency_budget)
    except solve.InfeasibleError:
      # No prediction is within the budget, but a schedule may MEASURE within it: the fastest
      # is a provisional choice, and `check_budget_in_loop` decides on measurements.
      chosen, criterion = min(sol.frontier, key=lambda p: p.latency), "latency_budget"
      provisional = BUDGET_PROVISIONAL
    sol = dataclasses.replace(sol, chosen=chosen, criterion=criterion)
  if accuracy_floor is not None:
    try:
      chosen, criterion = solve.choose(sol.frontier, accuracy_floor=accuracy_floor)
      sol = dataclasses.replace(sol, chosen=chosen, criterion=criterion)
    except solve.InfeasibleError:
      if evaluate is None:
        raise
      # No prediction reaches the floor (the combined model never predicts above the unpruned
      # accuracy), but a schedule may MEASURE above it: `check_floor` decides on measurements.

  def cand(plan: solve.Plan, **extra) -> Candidate:
    return _candidate(cfg, plan.counts, plan.latency, plan.accuracy, **extra)

  settings = {"alpha": alpha, "accuracy_floor": accuracy_floor,
              "latency_budget": latency_budget, "max_accuracy_drop": max_accuracy_drop,
              "floor_confidence": bool(floor_confidence), "metric": metric,
              "accuracy_model": accuracy_model, "monotone": monotone,
              "step_bottoms_only": step_bottoms_only, "step_k": step_k,
              "grid": sol.grid.tolist(), "allow_batch_mismatch": allow_batch_mismatch}
  if latency_model is not None:
    settings["latency_model"] = latency_model.summary()
  if provisional:
    settings["budget_provisional"] = provisional
  unused = _unused_estimate_counts(estimate, inp.ns)
  if unused:
    settings["unused_estimate_counts"] = unused
  solution = Solution(
      mode="multi", config=cfg, profile=_profile_ref(profile, batch, source),
      estimate=_estimate_ref(estimate, metric, inp.layers), settings=settings,
      chosen=cand(sol.chosen), method=estimate.method, criterion=sol.criterion,
      full=_as_estimate_measured(cand(sol.full), estimate, metric),
      frontier=tuple(cand(p) for p in sol.frontier), created=_now())
  images = _num_images(estimate, num_images)
  if measure_all:
    solution = measure_frontier(solution, evaluate, num_images=images)
  model = sol.model
  if refine_rounds:
    solution, model = refine_accuracy(solution, model, evaluate, rounds=refine_rounds,
                                      num_images=images, margins=margins)
  if accuracy_floor is not None and evaluate is not None:
    solution = check_floor(solution, estimate, model, evaluate, chunk=chunk,
                           num_images=num_images, neighbours=loop_neighbours)
  if measure_all and not refine_rounds and accuracy_floor is None:
    solution = choose_on_measurements(solution)   # (a floor is checked on them just above)
  why = latency_model.trust(solution.chosen.counts) if latency_model is not None else None
  if why:                                  # about the schedule finally chosen
    solution = dataclasses.replace(solution, settings=dict(solution.settings,
                                                           latency_untrusted=why))
  return solution


# ----------------------------------------------------------------------------------------------
# Measurements: accuracy with its binomial uncertainty, latency of compiled graphs.

def _measured(c: Candidate, value: float, num_images: Optional[int],
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
  """The schedules of `checked` whose 95 % interval contains the floor (`floor_status`); with a
  drop met with confidence only those measured against the unpruned graph image by image,
  judged by their paired interval as the choice was."""
  paired_only = judges_paired_change(solution.settings)
  return sorted({c.schedule for c in checked
                 if (not paired_only or c.measured_change_low is not None)
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
  if len(values) != len(candidates) or len(pairs) != len(candidates):
    raise ValueError(f"evaluate returned {len(values)} values for {len(candidates)} schedules")
  return [_measured(c, v, num_images, pair, full=full, metric=metric)
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


def _num_images(estimate: Optional[Estimate], num_images: Optional[int]) -> Optional[int]:
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
                     num_images: Optional[int] = None) -> Solution:
  """Every frontier schedule measured on the data (one `evaluate` call for those not measured
  yet) -> the solution with each of them in `checked` (measured metric, Wilson interval for
  `num_images`) and `settings['frontier_accuracy_error']`: the combination model's error on
  its own frontier, in points (predicted - measured: mean |e|, max |e|, mean signed). `chosen`
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
  settings = dict(solution.settings, frontier_accuracy_error=_error_points(
      [(p.predicted_accuracy, known[p.counts].measured_accuracy) for p in solution.frontier]))
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
                    margins: Optional[Margins] = None
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
  the grid leave "anchored" out ("anchored_skipped" says why).
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
  history = []
  for r in ref.rounds:
    for p in r.new:
      known[p.counts] = _measured(_candidate(cfg, p.counts, p.latency, p.accuracy),
                                  ref.measured[p.counts], images)
    row = dict(_error_points([(p.accuracy, ref.measured[p.counts]) for p in r.new]),
               round=r.index, frontier=r.frontier_size, fitted_on=r.fitted_on)
    if r.anchored is not None:
      row["anchored"] = _error_points([(a, ref.measured[p.counts])
                                       for p, a in zip(r.new, r.anchored)])
    history.append(row)
  full = solution.full
  if full.counts not in known:
    known.update((c.counts, c) for c in _measure(evaluate, [full], images))
  # One model for every prediction in the solution: the final one.
  known = {c: dataclasses.replace(
      p, predicted_accuracy=_reported(solve.predict_schedule(ref.model, c)[1]))
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
  `settings['floor_straddles']` lists the checked schedules whose interval contains the floor.
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
  images = _num_images(estimate, num_images)
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
  single_candidates = [_measured(_candidate(cfg, p.counts, p.latency, p.accuracy),
                                 measured[p.counts], images) for p in singles]
  single_candidates = [c for c in (_remeasured(pool, c) for c in single_candidates)
                       if solve.meets_floor(c.measured_accuracy, floor)]
  if confident:
    # The estimate measured the single reductions, but not against the unpruned graph image by
    # image: they are candidates to measure so (the unpruned graph is the fallback), on their
    # measured metric (the monotone envelope may predict one below the floor that measured
    # above it: it was never measured, and the unpruned graph chosen instead).
    best = dataclasses.replace(_measured(full, measured[full.counts], images),
                               measured_change_low=0.0, measured_change_high=0.0)
    for c in single_candidates:
      known = pool.get(c.counts)
      if known is None or known.measured_accuracy is None:
        pool[c.counts] = c if known is None else _measured(known, measured[c.counts], images)
  else:
    best = (single_candidates[0] if single_candidates else _remeasured(
        {c.counts: c for c in solution.checked}, _measured(full, measured[full.counts], images)))
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
                             criterion="accuracy_floor_measured", settings=settings)


def _choose_measured(measured: Sequence[Candidate], settings: Dict[str, Any],
                     fallback: Candidate) -> Candidate:
  """`solve.choose` with the solution's criterion (floor, budget or utility) over candidates on
  their MEASURED metric and predicted latency; `fallback` (the unpruned schedule) when nothing
  meets the floor; with a budget no prediction is within, the one predicted fastest (a
  provisional choice, as `solve_multilayer` makes it: `check_budget_in_loop` decides on
  measured latency, and started from the slowest schedule it measured its neighbours only)."""
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
  return [dataclasses.replace(p, measured_latency_s=float(t)) for p, t in zip(pool, seconds)]


class BudgetNotMetError(ValueError):
  """No schedule checked in the loop measures within the latency budget."""


def check_budget_in_loop(solution: Solution, evaluate: Evaluator, time_schedules: Timer, *,
                         neighbours: int = 2, num_images: Optional[int] = None,
                         max_rounds: int = 3) -> Solution:
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
  are measured the same way, up to `max_rounds` more times. Ties in accuracy go to the faster graph.
  criterion "latency_budget_measured", basis "measured", `settings['latency_basis'] ==
  "measured"`, `settings['timed_rounds']`: the schedules timed per measurement.
  BudgetNotMetError when none measures within the budget (naming the fastest).
  """
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
  if full is not None and full not in first and full.predicted_latency_s <= reach:
    first.append(full)             # (as likely to fit as the slowest checked: worth timing)
  timed: Dict[Tuple[int, ...], Candidate] = {}
  per_round: List[int] = []              # schedules timed per measurement

  def measure(pool: Sequence[Candidate]) -> None:
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
    if not below:     # the aim is below every prediction: the fastest not timed yet (the
      fastest = min(p.predicted_latency_s for p in timed.values())    # ratio is a median of
      below = sorted((p for c, p in pool_all.items()                  # other graphs')
                      if c not in timed and p.predicted_latency_s < fastest),
                     key=lambda p: p.predicted_latency_s)[:max(neighbours, 1) + 1]
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
                             criterion=criterion, settings=settings)


def check_in_loop(solution: Solution, estimate: Estimate, model: Optional[solve.CostModel],
                  evaluate: Evaluator, time_schedules: Timer, *, neighbours: int = 2,
                  num_images: Optional[int] = None, chunk: int = 6) -> Solution:
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
  measurement.
  """
  floor = solution.settings.get("accuracy_floor")
  if floor is None:
    raise ValueError("check_in_loop needs a solution with an accuracy floor")
  if solution.basis != "measured" or solution.chosen.measured_accuracy is None:
    if model is None:
      raise ValueError("the floor was not checked yet: pass the DP's cost model")
    solution = check_floor(solution, estimate, model, evaluate, chunk=chunk,
                           num_images=num_images, neighbours=neighbours)
  images = (num_images if num_images is not None else solution.settings.get("num_images")
            if "num_images" in solution.settings else _num_images(estimate, None))
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
  timed = _with_latency(time_schedules, timed)
  for p in timed:
    known[p.counts] = p
  best = min(timed, key=lambda p: (p.measured_latency_s, -sum(p.counts)))
  checked = tuple(sorted(known.values(), key=lambda p: p.predicted_latency_s))
  straddles = _straddling(solution, checked, floor)
  return _timed_choice(solution, best, checked, "accuracy_floor_measured", num_images=images,
                       floor_straddles=straddles, timed_in_loop=len(timed))
