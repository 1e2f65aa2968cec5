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
    interval (`solve_loop.floor_status`).
    With `latency_model` (`vitprune.profile.latency_model.LatencyModel`, calibrated on whole
    compiled graphs) the DP's costs come from it instead of the isolated per-block table, which
    over-predicts the compiled graph (`profile.latency_source == "calibrated-graph"`).
  Measuring on the data and timing in the loop (`check_in_loop`, `check_budget_in_loop`):
    `vitprune.solve_loop`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitprune import digits as digits_lib
from vitprune import schedule as schedule_lib
from vitprune import solve
from vitprune.config import (ViTConfig, config_to_dict, configs_shown, options_text,
                             same_method)
from vitprune.console import counted
from vitprune.profile import latency_model as latency_model_lib
from vitprune.profile import predict as predict_lib
from vitprune.profile import records
from vitprune.profile import steps as steps_lib
from vitprune.reduce.methods import make_reducer, reducer_fields
from vitprune.records.estimate import HIGHER_IS_BETTER, Estimate, EstimateError
from vitprune.records.solution import (BUDGET_PROVISIONAL, Candidate, EstimateRef, ProfileRef,
                                       Solution)
from vitprune.solve import SolveInputError
from vitprune.solve_loop import (Evaluator, Margins, check_floor, choose_on_measurements,
                                 measure_frontier, num_images_of, refine_accuracy,
                                 with_measured)

LatencyModel = latency_model_lib.LatencyModel


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
    ours, theirs = configs_shown(profile.model, a, estimate.model, b)
    raise SolveInputError(f"profile {profile.source} is for {ours} but estimate "
                          f"{estimate.source} is for {theirs}: their configs differ")
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
  if split in digits_lib.TRAINED_SPLITS:
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
  timed = latency_model_lib.calibration_method(profile)
  if timed is None:                   # a --mode=schedule profile: its block table is used
    return None
  if not same_method(estimate.method, timed):
    raise SolveInputError(f"profile {profile.source} timed {timed!r} schedules (reducer "
                          f"{profile.reducer!r}), estimate {estimate.source} is of method "
                          f"{estimate.method!r}: calibrate with the estimate's method "
                          f"(python -m experiments.profile --solver=multi "
                          f"--method={estimate.method}) or profile with --mode=block")
  batch = resolve_batch(profile, estimate, batch_size, ("schedule",), allow_batch_mismatch)
  num = sum(latency_model_lib.reduces(p.schedule) for p in profile.curve("schedule", batch))
  if num < latency_model_lib.MIN_CALIBRATION_SCHEDULES:
    raise SolveInputError(f"profile {profile.source} holds "
                          f"{counted(num, 'calibration schedule')} that "
                          f"{'reduces' if num == 1 else 'reduce'} at batch {batch}; the latency "
                          f"model needs >= "
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
                            f"batch_size=B / --batch_size=B (the estimate {estimate.source} was "
                            f"evaluated at batch {eval_batch})")
  if batch_size not in have:
    raise SolveInputError(f"profile {profile.source} has no {'/'.join(components)} points at "
                          f"batch size {batch_size} (has {have})")
  if batch_size != eval_batch and not allow_batch_mismatch:
    raise SolveInputError(f"batch sizes differ: profile {profile.source} at batch {batch_size}, "
                          f"estimate {estimate.source} at batch {eval_batch} (pass "
                          f"allow_batch_mismatch=True / --allow_batch_mismatch to combine them)")
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
                          f"complete per-block table at batch {batch} (the table has "
                          f"{records.missing_table_parts(profile, batch)})")
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
                     method_kwargs=estimate.reducer_kwargs)


def _as_estimate_measured(estimate: Estimate, metric: str) -> Callable[[Candidate], Candidate]:
  """A candidate -> itself with the estimate's measurement of exactly its schedule, where the
  estimate measured it (the unpruned schedule: its reference; paper mode: the curve's rows at
  the chosen block): measured metric and Wilson interval over the estimate's images. A
  predicted number stays predicted; a measured one said so (the unpruned accuracy was stored
  as predicted only). The estimate's measurements are read once, for every candidate."""
  measured = estimate.measured(metric) if metric in HIGHER_IS_BETTER else {}

  def mark(c: Candidate) -> Candidate:
    value = measured.get(c.counts)
    if value is None or c.measured_accuracy is not None:
      return c
    return with_measured(c, value, estimate.reference.num_examples)
  return mark


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
                method_options: Optional[Dict[str, Any]] = None,
                allow_batch_mismatch: bool = False) -> Solution:
  """The paper's n* = argmax U(n) and the POMT schedule reducing to n* at block `layer`.
  `method_options`: the chosen method's reducer options, recorded when the estimate measured
  another method (random drop's curve standing in for it); with the estimate's own method its
  `method_kwargs` are the options, and other ones are refused."""
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
  if alpha < 1 and not np.any(np.asarray(acc_c) > 0):  # (the utility said "all accuracies are
    raise SolveInputError(                                # 0", the unpruned one unnamed)
        f"estimate {estimate.source} measured {metric} 0 at every count, the unpruned model's "
        f"{estimate.reference.get(metric)!r} among them (untrained weights, or labels that are "
        "not the model's classes?): there is nothing to trade for latency; solve on agreement "
        "(experiments.solve --metric=agreement) or on latency alone (alpha 1)")
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
  own = method == estimate.method.strip().lower()     # (else random drop stands in for it)
  if method_options is not None and own:
    given, measured = (reducer_fields(make_reducer(method, **o))     # (defaults too: {} means
                       for o in (method_options, estimate.reducer_kwargs or {}))   # them)
    if given != measured:
      raise SolveInputError(f"method options {options_text(method_options) or 'none'} "
                            f"({options_text(given)}): estimate {estimate.source} measured "
                            f"{method} with {options_text(measured)}")
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

  as_measured = _as_estimate_measured(estimate, metric)
  unpruned = (cfg.num_tokens,) * (cfg.depth + 1)

  def entry(counts, latency, accuracy, **extra):
    return as_measured(Candidate.predicted(cfg, counts, latency, accuracy, **extra))

  def at_count(i):
    counts = solve.pomt_counts(cfg.num_tokens, int(sol.ns[i]), cfg.depth, layer)
    return entry(counts, sol.latency[i], sol.accuracy[i], tokens=int(sol.ns[i]))

  full = [i for i in range(sol.ns.size) if sol.ns[i] == cfg.num_tokens]
  return Solution(
      mode="paper", config=cfg, profile=_profile_ref(profile, batch, source),
      estimate=_estimate_ref(estimate, metric, [est_layer]),
      settings={"alpha": sol.alpha, "layer": layer, "metric": metric,
                "allow_batch_mismatch": allow_batch_mismatch,
                **({"unused_estimate_counts": unused} if unused else {}),
                **({"capped_counts": capped} if capped else {})},
      chosen=entry(sol.counts, sol.latency_star, sol.accuracy_star, tokens=int(sol.n_star)),
      method=method, criterion="utility",
      method_options=(dict(method_options) if method_options is not None and not own
                      else None),
      # L(N) of a measured curve is the unpruned graph timed (its other counts: the paper's
      # proxy for a schedule, all blocks at n): a measurement the text said and the record hid.
      # The unpruned entry alone says so: a choice of N keeps the curve's numbers (no loop ran)
      full=(entry(unpruned, sol.latency[full[0]], sol.accuracy[full[0]],
                  **({"measured_latency_s": float(sol.latency[full[0]])}
                     if source == "measured" else {})) if full else None),
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


def above_unpruned(e: solve.InfeasibleError, floor: float, inp: MultiInputs, metric: str
                   ) -> solve.InfeasibleError:
  """`e` (no predicted accuracy meets `floor`) saying, where the floor is above the unpruned
  model's, that the combined model never predicts above it, and naming the estimate's best
  single reduction there (a floor one measured point met was called infeasible, unsaid)."""
  if floor <= inp.full_accuracy:
    return e
  table = np.asarray(inp.sensitivity)[:, :-1]           # [layers, K - 1]: the counts below N
  row, col = np.unravel_index(int(np.argmax(table)), table.shape)
  best = (f"; the estimate's best single reduction, block {inp.layers[row]} to "
          f"{int(inp.ns[col])} tokens, measured {table[row, col]:.4f}, meets the floor but "
          "counts as no gain" if table[row, col] >= floor else "")
  return solve.InfeasibleError(
      f"{e}: the combined model never predicts above the unpruned {metric} "
      f"{inp.full_accuracy:.5g}{best}; pass --weights to measure schedules against the floor")


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
                          f"block and head points) at batch {batch}: "
                          f"{records.missing_table_parts(profile, batch)}; profile with "
                          "--mode=block")
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
      # is a provisional choice, and `solve_loop.check_budget_in_loop` decides on measurements.
      chosen, criterion = min(sol.frontier, key=lambda p: p.latency), "latency_budget"
      provisional = BUDGET_PROVISIONAL
    sol = dataclasses.replace(sol, chosen=chosen, criterion=criterion)
  if accuracy_floor is not None:
    try:
      chosen, criterion = solve.choose(sol.frontier, accuracy_floor=accuracy_floor)
      sol = dataclasses.replace(sol, chosen=chosen, criterion=criterion)
    except solve.InfeasibleError as e:
      if evaluate is None:
        raise above_unpruned(e, accuracy_floor, inp, metric) from None
      # No prediction reaches the floor (the combined model never predicts above the unpruned
      # accuracy), but a schedule may MEASURE above it: `check_floor` decides on measurements.

  def cand(plan: solve.Plan, **extra) -> Candidate:
    return Candidate.predicted(cfg, plan.counts, plan.latency, plan.accuracy, **extra)

  settings = {"alpha": alpha, "accuracy_floor": accuracy_floor,
              "latency_budget": latency_budget, "max_accuracy_drop": max_accuracy_drop,
              "floor_confidence": bool(floor_confidence), "metric": metric,
              "accuracy_model": accuracy_model, "monotone": monotone,
              "step_bottoms_only": step_bottoms_only, "step_k": step_k,
              "grid": sol.grid.tolist(), "allow_batch_mismatch": allow_batch_mismatch,
              # (the in-loop checks set "measured"; a choice on measured accuracy alone, e.g.
              # a utility after measure_all, said basis "measured" and nothing of its latency)
              "latency_basis": "predicted"}
  if latency_model is not None:
    settings["latency_model"] = latency_model.summary()
  if provisional:
    settings["budget_provisional"] = provisional
  unused = _unused_estimate_counts(estimate, inp.ns)
  if unused:
    settings["unused_estimate_counts"] = unused
  if latency_model is not None:
    on_curve = set(latency_model.tokens)
    between = [int(n) for n in inp.ns if int(n) not in on_curve]
    if between:
      settings["interpolated_counts"] = between
  solution = Solution(
      mode="multi", config=cfg, profile=_profile_ref(profile, batch, source),
      estimate=_estimate_ref(estimate, metric, inp.layers), settings=settings,
      chosen=cand(sol.chosen), method=estimate.method, criterion=sol.criterion,
      full=_as_estimate_measured(estimate, metric)(cand(sol.full)),
      frontier=tuple(cand(p) for p in sol.frontier), created=_now())
  images = num_images_of(estimate, num_images)
  in_sample = estimate.measured(metric)       # (the model's own table: not scored)
  if measure_all:
    solution = measure_frontier(solution, evaluate, num_images=images,
                                measured_before=in_sample)
  model = sol.model
  if refine_rounds:
    solution, model = refine_accuracy(solution, model, evaluate, rounds=refine_rounds,
                                      num_images=images, margins=margins,
                                      measured_before=in_sample)
  if accuracy_floor is not None and evaluate is not None:
    solution = check_floor(solution, estimate, model, evaluate, chunk=chunk,
                           num_images=num_images, neighbours=loop_neighbours)
  if measure_all and not refine_rounds and accuracy_floor is None:
    solution = choose_on_measurements(solution)   # (a floor is checked on them just above)
  why = latency_model.trust(solution.chosen.counts) if latency_model is not None else None
  if why:                                  # about the schedule finally chosen
    solution = dataclasses.replace(solution, settings=dict(solution.settings,
                                                           latency_untrusted=why))
  model_wide = latency_model.trust(()) if latency_model is not None else None
  if model_wide:                           # (stays once the choice is timed: it chose what was)
    solution = dataclasses.replace(solution, settings=dict(solution.settings,
                                                           latency_model_untrusted=model_wide))
  return solution
