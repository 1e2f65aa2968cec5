"""The solve stage: a `Profile` and an `Estimate` in, a `Solution` out (no files, no jax).

The two records must describe the same model (name and config) and, unless
`allow_batch_mismatch`, the profile batch size used must equal the estimate's evaluation batch
size. Accuracy values are the estimate's metric ('accuracy' for labelled data, else 'agreement';
'kl' is lower-is-better and refused).

  paper mode (`solve_paper`): L(n) = the profile's whole-model curve at the batch size ("model"
    points; predicted from the per-block table when only that was profiled), A(n) = the
    estimate's curve (a 'tokens' record, or the row of `layer` in a sensitivity record).
  multi mode (`solve_multilayer`): the per-block table (embed/block/head points; profile with
    --mode=block) and the per-layer sensitivity rows of the estimate (rows of integer layers; the
    after-embedding row is not a block reduction and is ignored), on the common token grid plus
    the full count. With an accuracy floor and an `evaluate` callback the floor is checked on the
    data: the choice then rests on measured accuracy (`Solution.basis == "measured"`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitprune import jsonio
from vitprune import schedule as schedule_lib
from vitprune import solve
from vitprune.config import ViTConfig, config_to_dict
from vitprune.profile import predict as predict_lib
from vitprune.profile import records
from vitprune.profile import steps as steps_lib
from vitprune.records.estimate import Estimate, EstimateError
from vitprune.records.solution import Candidate, EstimateRef, ProfileRef, Solution

# Measures schedules on the data: a list of counts -> their metric values, same order.
Evaluator = Callable[[Sequence[Tuple[int, ...]]], Sequence[float]]


class SolveInputError(ValueError):
  """A profile and an estimate that cannot be used together (or at all)."""


# ----------------------------------------------------------------------------------------------
# Checking the inputs.

def check_same_model(profile: records.Profile, estimate: Estimate) -> ViTConfig:
  """The model config both records describe; SolveInputError naming both otherwise."""
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
  return estimate.config


def resolve_batch(profile: records.Profile, estimate: Estimate, batch_size: Optional[int],
                  components: Tuple[str, ...], allow_batch_mismatch: bool = False) -> int:
  """The profile batch size to solve for, checked against the estimate's evaluation batch."""
  have = sorted({p.batch_size for p in profile.points if p.component in components})
  if not have:
    raise SolveInputError(f"profile {profile.source} has no {'/'.join(components)} points")
  eval_batch = estimate.eval_batch_size
  if batch_size is None:
    if len(have) == 1:
      batch_size = have[0]
    elif eval_batch in have:
      batch_size = eval_batch
    else:
      raise SolveInputError(f"profile {profile.source} has batch sizes {have}; pass batch_size "
                            f"(the estimate {estimate.source} was evaluated at batch "
                            f"{eval_batch})")
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
  predicted by the per-block table."""
  if profile.curve("model", batch):
    t, med, _, _ = _curve(profile, "model", batch)
    return t, med, "measured"
  table = _block_table(profile, batch)
  if table is None:
    raise SolveInputError(f"profile {profile.source} has neither a whole-model curve nor a "
                          f"complete per-block table at batch {batch}")
  tokens = sorted(set(table.block_s) & set(table.head_s))
  pred = predict_lib.predict_curve(table, cfg.depth, tokens)
  return (np.array(tokens, np.int64), np.array([pred[n] for n in tokens]),
          "predicted_from_blocks")


def _profile_ref(profile: records.Profile, batch: int, latency_source: str) -> ProfileRef:
  return ProfileRef(path=profile.source,
                    sha256=jsonio.canonical_sha256(records.to_json(profile)),
                    device_kind=profile.device_kind, platform=profile.platform,
                    dtype=profile.dtype, batch_size=batch, latency_source=latency_source)


def _estimate_ref(estimate: Estimate, metric: str, layers: Sequence[Optional[int]]
                  ) -> EstimateRef:
  return EstimateRef(path=estimate.source, sha256=estimate.sha256(), kind=estimate.kind,
                     method=estimate.method, metric=metric, layers=tuple(layers),
                     eval_batch_size=estimate.eval_batch_size,
                     weights_sha256=estimate.weights_sha256,
                     data_fingerprint=estimate.data_fingerprint)


def _candidate(cfg: ViTConfig, counts: Sequence[int], latency: float, accuracy: float,
               **extra) -> Candidate:
  counts = tuple(int(c) for c in counts)
  return Candidate(counts=counts,
                   schedule=schedule_lib.format_schedule(schedule_lib.Schedule(counts), cfg),
                   predicted_latency_s=float(latency), predicted_accuracy=float(accuracy),
                   **extra)


def _now() -> str:
  return records.now_iso()


# ----------------------------------------------------------------------------------------------
# Paper mode.

def solve_paper(profile: records.Profile, estimate: Estimate, *, alpha: float = 0.5,
                layer: int = 3, batch_size: Optional[int] = None,
                metric: Optional[str] = None, method: Optional[str] = None,
                allow_batch_mismatch: bool = False) -> Solution:
  """The paper's n* = argmax U(n) and the POMT schedule reducing to n* at block `layer`."""
  cfg = check_same_model(profile, estimate)
  batch = resolve_batch(profile, estimate, batch_size, ("model", "block"), allow_batch_mismatch)
  metric = resolve_metric(estimate, metric)
  lt, lat, source = latency_curve(profile, cfg, batch)
  if len(estimate.layers) == 1:
    est_layer = estimate.layers[0]
  elif layer in estimate.layers:
    est_layer = layer
  else:
    raise SolveInputError(f"estimate {estimate.source} has layers {list(estimate.layers)}; "
                          f"paper mode needs a 'tokens' estimate or one with layer {layer}")
  at, acc = estimate.curve(metric, layer=est_layer)
  try:
    ns, lat_c, acc_c = solve.intersect_grid(lt, lat, at, acc)
  except ValueError as e:
    raise SolveInputError(f"profile {profile.source} and estimate {estimate.source}: {e}"
                          ) from None
  sol = solve.solve_paper(ns, lat_c, acc_c, alpha, depth=cfg.depth, num_tokens=cfg.num_tokens,
                          layer=layer)
  table = _block_table(profile, batch)
  sched_lat = None
  if table is not None:
    try:
      sched_lat = predict_lib.predict(table, schedule_lib.Schedule(sol.counts))
    except KeyError:
      sched_lat = None
  if method is None:
    method = "pomt" if est_layer is None else estimate.method

  def at_count(i):
    counts = solve.pomt_counts(cfg.num_tokens, int(sol.ns[i]), cfg.depth, layer)
    return _candidate(cfg, counts, sol.latency[i], sol.accuracy[i], tokens=int(sol.ns[i]))

  full = [i for i in range(sol.ns.size) if sol.ns[i] == cfg.num_tokens]
  return Solution(
      mode="paper", config=cfg, profile=_profile_ref(profile, batch, source),
      estimate=_estimate_ref(estimate, metric, [est_layer]),
      settings={"alpha": sol.alpha, "layer": layer, "metric": metric,
                "allow_batch_mismatch": allow_batch_mismatch},
      chosen=_candidate(cfg, sol.counts, sol.latency_star, sol.accuracy_star,
                        tokens=int(sol.n_star)),
      method=method, criterion="utility",
      full=(_candidate(cfg, (cfg.num_tokens,) * (cfg.depth + 1), sol.latency[full[0]],
                       sol.accuracy[full[0]]) if full else None),
      frontier=tuple(at_count(i) for i in solve.nondominated(sol.latency, sol.accuracy,
                                                             sol.ns)),
      created=_now(), utility=float(sol.utility_star), schedule_latency_s=sched_lat,
      curve={"tokens": sol.ns.tolist(), "latency_s": sol.latency.tolist(),
             "accuracy": sol.accuracy.tolist(), "utility": sol.utility.tolist()})


# ----------------------------------------------------------------------------------------------
# Multi-layer mode.

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
  pair_noise: np.ndarray    # [K - 1] seconds, k * max(pair standard error, curve noise)


def multilayer_inputs(profile: records.Profile, estimate: Estimate, cfg: ViTConfig, batch: int,
                      metric: str, step_k: float = 4.0) -> MultiInputs:
  """Aligns the per-block table and the sensitivity table on their common grid (+ N)."""
  table = _block_table(profile, batch)
  if table is None:
    raise SolveInputError(f"profile {profile.source} has no complete per-block table (embed, "
                          f"block and head points) at batch {batch}; profile with --mode=block")
  n_full = cfg.num_tokens
  if n_full not in table.block_s:
    raise SolveInputError(f"profile {profile.source}: the per-block table lacks the full count "
                          f"{n_full} (block 0 always sees all tokens)")
  est_layers, tokens, values = estimate.table(metric)
  rows = [(l, r) for r, l in enumerate(est_layers) if l is not None]
  if not rows:
    raise SolveInputError(f"estimate {estimate.source} has no per-layer sensitivity (layers "
                          f"{est_layers}: only drops after the embedding); estimate with "
                          f"reduction layers for multi mode")
  head_single = len(table.head_s) == 1
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
  full_acc = float(estimate.reference.get(metric))
  pos = {int(n): i for i, n in enumerate(tokens)}
  sens = np.array([[values[r, pos[int(n)]] if int(n) in pos else full_acc for n in ns[:-1]]
                   + [full_acc] for _, r in rows])
  bt, bmed, biqr, bcnt = _curve(profile, "block", batch)
  bpos = {int(n): i for i, n in enumerate(bt)}
  sel = [bpos[int(n)] for n in ns]
  med, iqr, cnt = bmed[sel], biqr[sel], bcnt[sel]
  noise = step_k * np.maximum(steps_lib.pair_noise(iqr, cnt), steps_lib.curve_noise(med))
  # Each separately timed part holds one per-call overhead, the whole forward pays it once: keep
  # it in the embedding, take it out of the blocks and the head (as predict.predict does).
  ovh = float(table.overhead_s)
  head = (float(next(iter(table.head_s.values()))) - ovh if head_single
          else np.array([table.head_s[int(n)] for n in ns]) - ovh)
  return MultiInputs(ns=ns, block=np.maximum(med - ovh, 0.0), head=np.maximum(head, 0.0),
                     embed=float(table.embed_s), layers=tuple(l for l, _ in rows),
                     sensitivity=sens, full_accuracy=full_acc, pair_noise=noise)


def solve_multilayer(profile: records.Profile, estimate: Estimate, *,
                     accuracy_floor: Optional[float] = None,
                     latency_budget: Optional[float] = None, alpha: float = 0.5,
                     batch_size: Optional[int] = None, metric: Optional[str] = None,
                     accuracy_model: str = "incremental", monotone: bool = True,
                     step_bottoms_only: bool = False, step_k: float = 4.0,
                     allow_batch_mismatch: bool = False,
                     evaluate: Optional[Evaluator] = None, chunk: int = 6) -> Solution:
  """The exact multi-layer Pareto frontier and the schedule chosen on it.

  With `accuracy_floor` and `evaluate` (schedules -> metric measured on the data), the floor is
  checked on measurements (`check_floor`) and the solution rests on them.
  """
  cfg = check_same_model(profile, estimate)
  batch = resolve_batch(profile, estimate, batch_size, ("block",), allow_batch_mismatch)
  metric = resolve_metric(estimate, metric)
  inp = multilayer_inputs(profile, estimate, cfg, batch, metric, step_k)
  sol = solve.solve_multilayer(
      inp.ns, inp.block, inp.sensitivity, inp.full_accuracy, depth=cfg.depth,
      num_tokens=cfg.num_tokens, layers=inp.layers, embed_latency=inp.embed,
      head_latency=inp.head, accuracy_model=accuracy_model, monotone=monotone,
      step_bottoms_only=step_bottoms_only, pair_noise=inp.pair_noise,
      accuracy_floor=accuracy_floor, latency_budget=latency_budget, alpha=alpha)

  def cand(plan: solve.Plan, **extra) -> Candidate:
    return _candidate(cfg, plan.counts, plan.latency, plan.accuracy, **extra)

  solution = Solution(
      mode="multi", config=cfg, profile=_profile_ref(profile, batch, "blocks"),
      estimate=_estimate_ref(estimate, metric, inp.layers),
      settings={"alpha": alpha, "accuracy_floor": accuracy_floor,
                "latency_budget": latency_budget, "metric": metric,
                "accuracy_model": accuracy_model, "monotone": monotone,
                "step_bottoms_only": step_bottoms_only, "step_k": step_k,
                "grid": sol.grid.tolist(), "allow_batch_mismatch": allow_batch_mismatch},
      chosen=cand(sol.chosen), method=estimate.method, criterion=sol.criterion,
      full=cand(sol.full), frontier=tuple(cand(p) for p in sol.frontier), created=_now())
  if accuracy_floor is not None and evaluate is not None:
    solution = check_floor(solution, estimate, sol.model, evaluate, chunk=chunk)
  return solution


def check_floor(solution: Solution, estimate: Estimate, model: solve.CostModel,
                evaluate: Evaluator, chunk: int = 6) -> Solution:
  """The fastest schedule whose *measured* metric meets the solution's accuracy floor.

  The combined accuracy model can be optimistic when several layers reduce. Two sources of
  measured candidates:
    * single-reduction schedules: the estimate already measured each one (S[l, n], same data);
    * frontier schedules predicted to meet the floor and predicted faster than the best of
      those: measured with `evaluate`, `chunk` per call, fastest first, until one meets it.
  Returns the solution with `chosen` (its measured metric filled in), `checked` (every frontier
  schedule measured here) and `basis="measured"`; criterion "accuracy_floor_measured".
  """
  cfg, metric = solution.config, solution.metric
  floor = solution.settings["accuracy_floor"]
  measured = estimate.measured(metric)
  full = solution.full
  grid = {int(n) for n in model.ns}
  singles = sorted((solve.Plan(c, *solve.predict_schedule(model, c))
                    for c, v in measured.items()
                    if v >= floor and c != full.counts and grid.issuperset(c)),
                   key=lambda p: p.latency)
  best = (_candidate(cfg, singles[0].counts, singles[0].latency, singles[0].accuracy,
                     measured_accuracy=measured[singles[0].counts]) if singles else
          dataclasses.replace(full, measured_accuracy=measured[full.counts]))
  candidates = sorted((p for p in solution.frontier if p.predicted_accuracy >= floor and
                       p.predicted_latency_s < best.predicted_latency_s),
                      key=lambda p: p.predicted_latency_s)
  checked: List[Candidate] = []
  for start in range(0, len(candidates), chunk):
    batch = candidates[start:start + chunk]
    values = evaluate([p.counts for p in batch])
    done = [dataclasses.replace(p, measured_accuracy=float(v)) for p, v in zip(batch, values)]
    checked += done
    ok = [p for p in done if p.measured_accuracy >= floor]
    if ok:
      best = ok[0]
      break
  return dataclasses.replace(solution, chosen=best, checked=tuple(checked), basis="measured",
                             criterion="accuracy_floor_measured",
                             settings=dict(solution.settings, singles_meeting_floor=len(singles)))

