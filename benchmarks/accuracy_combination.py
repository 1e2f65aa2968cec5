r"""Where the multi-layer solver's accuracy prediction errs, and why: combined single-layer
sensitivities vs measured accuracy of multi-layer schedules (vit_digits, the 359 test digits).

  python -m benchmarks.accuracy_combination                 # ~3 min on 2 cores
  python -m benchmarks.accuracy_combination --quick --conditional=3:41   # smoke (~30 s)
  python -m benchmarks.accuracy_combination --method=random --method_opts=seed=1,nested=false

The solver predicts a schedule's accuracy from the per-layer sensitivity S[l, n] (accuracy when
only block l reduces, from all N tokens to n) with the 'incremental' combination
(`vitprune.solve`, the default) or the 'additive' one. This benchmark measures
  1. the sensitivity table (as the main job does: every block, every 4th count);
  2. `--num_random` random multi-layer schedules (2 to 5 reductions at random blocks: a single
     reduction is a point of the table, which the combination reproduces by construction);
  3. `--num_frontier` schedules spread over the solver's Pareto frontier, with FLOP as the
     latency (`vitprune.flops.block_flop`: deterministic, so the frontier does not depend on
     this machine's timing noise; the accuracy side is exactly the solver's);
  4. with `--conditional=B:M`, the sensitivity of every later block after a first reduction to
     M tokens at block B, and a "conditional" combination: a reduction after an earlier one
     (n_in < N, n_in <= M) is charged C[l, n_out] - C[l, n_in] from that table instead of the
     single-layer increment. It tests whether the error is an interaction that single-layer
     tables cannot see.
  5. with `--refine_rounds` > 0, the measured correction of the main job's
     `--refine_accuracy_rounds` (`solve.refine_frontier`, FLOP latency): per round the error of
     the schedules it measured, predicted BEFORE measuring; the corrected model on the random
     schedules it never measured ("refined" rows); and per floor the fewest FLOP among measured
     schedules meeting it, from the uncorrected frontier alone vs after the refinement, with
     what the uncorrected model's own choice measures. The same rounds also predict the
     schedules they measure by `solve.anchored_accuracy` ("anchored": per-image margins moved
     from the 3 nearest schedules measured in earlier rounds), before measuring them. Rounds
     1+ and 2+ pooled ("pooled") say whether each prediction meets the issue's target there
     (|error| mean <= 0.5, max <= 2 points; TARGET_MEAN, TARGET_MAX).
  6. a "per-image" combination (`solve.per_image_accuracy`): each test image's top-1 margin
     (its label's logit minus the largest other) moves by the incremental single-layer changes
     of that image, and the image counts as correct while the sum stays > 0, so cuts that each
     leave an image correct can together flip it. It is not a sum of per-block terms, so the
     DP cannot optimise it; its own frontier ("per-image frontier" rows) comes from scoring
     every non-increasing schedule on the grid (skipped above `--enumerate_limit`), spread
     over `--num_frontier` schedules and measured like the solver's.
  7. with `--pairwise=FIRSTS:STEP` (e.g. 49,33,17:8), measured interactions of two cuts: every
     schedule with a first cut at block i to a FIRSTS count and a second at a later block j to
     every STEP-th count below it (and the grid's fewest), and a "pairwise" per-image
     combination: the per-image model plus, for each consecutive pair of cuts, the interaction
     those schedules measured (margin measured - margin the per-image model gives), linear in
     the first count a between the measured ones and in the tokens the second cut removes,
     a - b (0 with no first cut, a = N, or no second, b = a; clamped beyond the most a
     measured cut removes). Scored like the per-image model, with its own frontier
     ("pairwise frontier" rows): does a model that has measured how cuts interact escape the
     winner's curse on the frontier it chooses?
  8. a "cautious" combination: the least of the incremental, additive and per-image
     predictions (no measurement beyond the table), with its own frontier ("cautious frontier"
     rows, scored like the per-image one): a search can only exploit the blind spots the three
     models share. Does a pessimistic ensemble escape the winner's curse?
Every schedule is measured on the same images as the table, so the error is the combination
model's alone (no sampling error between prediction and measurement). Errors are reported in
points (predicted - measured: positive = optimistic), over all schedules and over those whose
measured drop is below 10 points (the region a floor near the unpruned accuracy uses).

Prints a markdown table and writes JSON (--out).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import console
from vitprune import solve, solve_stage
from vitprune import schedule as schedule_lib
from vitprune import estimate as estimate_lib
from vitprune.flops import block_flop
from vitprune.pipeline import one_block_counts
from vitprune.profile import latency_model
from vitprune.reduce.methods import make_reducer, reducer_fields
from vitprune.schedule import Schedule

Counts = Tuple[int, ...]


RESULT_FORMAT = "vitprune-accuracy-combination"    # marks --out files this script may replace


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_string("method", "pomt", "Token-reduction method.", flag_values=fv)
  flags.DEFINE_list("method_opts", [], "The reducer's options, key=value (e.g. random drop's "
                    "seed=3,nested=false).", flag_values=fv)
  flags.DEFINE_integer("num_random", 60, "Random multi-layer schedules.", lower_bound=1,
                       upper_bound=10000, flag_values=fv)
  flags.DEFINE_integer("num_frontier", 24, "Schedules spread over the frontier.", lower_bound=2,
                       flag_values=fv)
  flags.DEFINE_string("conditional", "0:49", "B:M: also measure every later block's sensitivity "
                      "after a first reduction to M tokens at block B ('' for none).",
                      flag_values=fv)
  flags.DEFINE_integer("step", 4, "Token grid step (the main job's multi-layer grid: 4).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("num_images", None, "A class-balanced subset of the test digits "
                       "(default: all 359).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the random schedules.", lower_bound=0,
                       upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_integer("refine_rounds", 6, "Rounds of the measured correction "
                       "(`solve.refine_frontier`, as --refine_accuracy_rounds); 0: skip it.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("floors", "0.95,0.96,0.97", "Accuracy floors for the refinement's "
                      "choice rows.", flag_values=fv)
  flags.DEFINE_integer("enumerate_limit", 200000, "Most schedules scored for the per-image "
                       "model's own frontier (more: the rows are skipped; 0: always skip).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("pairwise", "", "FIRSTS:STEP, e.g. 49,33,17:8: also measure two-cut "
                      "schedules and score the 'pairwise' combination (module doc); '' for none.",
                      flag_values=fv)
  flags.DEFINE_bool("quick", False, "Smoke run: grid step 24, 3 random and 3 frontier "
                    "schedules, 60 images.", flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/accuracy_combination.json", "JSON output.",
                      flag_values=fv)


def parse_conditional(text: str, cfg) -> Optional[Tuple[int, int]]:
  """'B:M' -> (block B, count M), checked against the model; '' -> None."""
  if not text:
    return None
  try:
    b, m = (int(v) for v in text.split(":"))
  except ValueError:
    raise ValueError(f"--conditional: {text!r} is not BLOCK:COUNT (e.g. 0:49)") from None
  if not 0 <= b < cfg.depth - 1:
    raise ValueError(f"--conditional: block {b} must be in 0..{cfg.depth - 2} (a later block "
                     f"must follow it)")
  if not cfg.num_prefix_tokens < m < cfg.num_tokens:
    raise ValueError(f"--conditional: count {m} must be in {cfg.num_prefix_tokens + 1}.."
                     f"{cfg.num_tokens - 1}")
  return b, m


def conditional_schedules(cfg, base: Tuple[int, int], grid: Sequence[int],
                          max_remove: Callable[[int], int]) -> List[Counts]:
  """First reduction to M at block B, then one more at each later block l to every n < M of
  `grid` that one block can reach from M (`max_remove(M)`)."""
  b, m = base
  return [schedule_lib.prune_layers(cfg, {b: m, l: n}).counts
          for l in range(b + 1, cfg.depth)
          for n in sorted(g for g in grid if m - max_remove(m) <= g < m)]


def conditional_rows(cfg, base: Tuple[int, int], schedules: Sequence[Counts],
                     measured: Sequence[float]) -> Dict[int, Dict[int, float]]:
  """{block l: {n: C[l, n]}}: drop (vs the base schedule) of reducing to n at l after the base
  reduction, with the solver's pessimistic envelope (a drop at n >= every drop at a larger n,
  >= 0); C[l, M] = 0."""
  b, m = base
  base_acc = measured[0]
  raw: Dict[int, Dict[int, float]] = {}
  for c, a in zip(schedules[1:], measured[1:]):
    l = next(j for j in range(b + 1, cfg.depth) if c[j + 1] < m)
    raw.setdefault(l, {m: 0.0})[c[-1]] = base_acc - a
  rows = {}
  for l, row in raw.items():
    ns = sorted(row)
    rows[l] = dict(zip(ns, solve.drop_envelope([row[n] for n in ns]).tolist()))
  return rows


def conditional_drop(model: solve.CostModel, base: Tuple[int, int],
                     rows: Dict[int, Dict[int, float]], counts: Counts) -> float:
  """The conditional combination (module doc) of one schedule: drop from the full accuracy."""
  b, m = base
  pos = {int(n): i for i, n in enumerate(model.ns)}
  n_full = model.num_tokens
  drop = 0.0
  for l in range(model.depth):
    n_in, n_out = counts[l], counts[l + 1]
    if n_out >= n_in:
      continue
    row = rows.get(l)
    if n_in < n_full and n_in <= m and row is not None and n_out in row and n_in in row:
      drop += row[n_out] - row[n_in]
    else:
      d = model.drop[l]
      drop += d[pos[n_out]] - (d[pos[n_in]] if n_in < n_full else 0.0)
  return drop


def parse_pairwise(text: str, grid: Sequence[int]) -> Optional[Tuple[Tuple[int, ...], int]]:
  """'A1,A2,...:STEP' -> (first-cut counts ascending, step), checked against the token grid;
  '' -> None."""
  if not text:
    return None
  firsts, sep, step = text.rpartition(":")
  try:
    counts = sorted({int(v) for v in firsts.split(",")}) if sep else []
    step_n = int(step)
  except ValueError:
    counts = []
  if not counts:
    raise ValueError(f"--pairwise: {text!r} is not COUNT,...:STEP (e.g. 49,33,17:8)")
  if step_n < 1:
    raise ValueError(f"--pairwise: step {step_n} must be >= 1")
  g = sorted(int(n) for n in grid)
  for a in counts:
    if a not in g or not g[0] < a < g[-1]:
      raise ValueError(f"--pairwise: first-cut count {a} must be a count of the grid between "
                       f"{g[0]} and {g[-1]} (exclusive): {g}")
  return tuple(counts), step_n


def pair_schedules(cfg, grid: Sequence[int], firsts: Sequence[int], step: int,
                   max_remove: Callable[[int], int]) -> List[Counts]:
  """Two cuts: block i to a (each of `firsts` one block reaches from N), then block j > i to
  every count b of `grid` below a with (a - b) % step == 0, and the grid's fewest, that one
  block reaches from a."""
  n_full, low = cfg.num_tokens, min(grid)
  out = []
  for i in range(cfg.depth - 1):
    for j in range(i + 1, cfg.depth):
      for a in firsts:
        if a < n_full - max_remove(n_full):
          continue
        for b in sorted({g for g in grid if g < a and ((a - g) % step == 0 or g == low)},
                        reverse=True):
          if b >= a - max_remove(a):
            out.append(schedule_lib.prune_layers(cfg, {i: a, j: b}).counts)
  return out


class PairInteractions:
  """The "pairwise" combination (module doc, 7): per-image interactions of two cuts measured on
  `pair_schedules`, interpolated. `table`: the single-layer margins; `measured`: {counts: [M]
  margins} of two-cut schedules."""

  def __init__(self, table: solve.MarginTable, measured: Dict[Counts, np.ndarray]):
    self.table = table
    self.n_full = int(table.ns[-1])
    self.rows: Dict[Tuple[int, int, int], Dict[int, np.ndarray]] = {}   # (i, a, j): {b: [M]}
    for counts, m in measured.items():
      i, j = Schedule(counts).reduction_layers      # (two cuts: to a at block i, b at j)
      a, b = int(counts[i + 1]), int(counts[j + 1])
      plain = solve.per_image_margins(table, [counts])[0]
      self.rows.setdefault((i, a, j), {})[b] = np.asarray(m, np.float64) - plain
    self.firsts = sorted({a for _, a, _ in self.rows})
    self._cache: Dict[Tuple[int, int, int, int], np.ndarray] = {}

  def _row(self, i: int, a: int, j: int, removed: int) -> np.ndarray:
    """[M] the interaction at a measured first count `a` of a second cut removing `removed`
    tokens: linear in `removed` (0 at 0; clamped beyond the most a measured cut removes)."""
    zero = np.zeros(self.table.reference.size)
    row = self.rows.get((i, a, j))
    if row is None or removed <= 0:
      return zero
    xs = [0] + sorted(a - b for b in row)
    vs = [zero] + [row[a - x] for x in xs[1:]]
    if removed >= xs[-1]:
      return vs[-1]
    k = next(k for k in range(len(xs) - 1) if xs[k] <= removed <= xs[k + 1])
    w = (removed - xs[k]) / (xs[k + 1] - xs[k])
    return (1 - w) * vs[k] + w * vs[k + 1]

  def at(self, i: int, a: int, j: int, b: int) -> np.ndarray:
    """[M] the interaction of a cut at block i to a and one at block j to b, by the tokens the
    second removes (a - b): linear in a between the measured first counts (0 at a = N; below
    the fewest measured, its row)."""
    key = (i, a, j, b)
    if key not in self._cache:
      xs = self.firsts + [self.n_full]
      a0 = max([x for x in xs if x <= a], default=xs[0])
      v0 = self._row(i, a0, j, a - b)
      if a <= a0:
        self._cache[key] = v0
      else:
        a1 = min(x for x in xs if x > a0)       # (N: no first cut, no interaction)
        w = (a - a0) / (a1 - a0)
        self._cache[key] = (1 - w) * v0 + w * self._row(i, a1, j, a - b)
    return self._cache[key]

  def accuracy(self, counts_list: Sequence[Counts], chunk: int = 4096) -> np.ndarray:
    """[S] predicted accuracies: per-image margins plus each consecutive pair of cuts'
    interaction, > 0 counting as correct."""
    rows = [[schedule_lib.as_int(v, "schedule count") for v in c] for c in counts_list]
    if not rows:
      return np.empty(0)
    counts = np.asarray(rows, np.int64)
    out = np.empty(len(counts))
    for s in range(0, len(counts), chunk):
      c = counts[s:s + chunk]
      m = solve.per_image_margins(self.table, c.tolist())
      last_block, last_count = np.full(len(c), -1), np.zeros(len(c), np.int64)
      for l in range(c.shape[1] - 1):
        cut = c[:, l + 1] < c[:, l]
        rows = np.flatnonzero(cut & (last_block >= 0))
        if rows.size:
          kb, ka, kc = last_block[rows], last_count[rows], c[rows, l + 1]
          code = (kb * (self.n_full + 1) + ka) * (self.n_full + 1) + kc
          _, first, inv = np.unique(code, return_index=True, return_inverse=True)
          vecs = np.stack([self.at(int(kb[f]), int(ka[f]), l, int(kc[f])) for f in first])
          m[rows] += vecs[inv.reshape(-1)]
        last_block = np.where(cut, l, last_block)
        last_count = np.where(cut, c[:, l + 1], last_count)
      out[s:s + chunk] = (m > 0).mean(axis=1)
    return out


def cautious_accuracy(models: Dict[str, solve.CostModel], table: solve.MarginTable,
                      schedules: Sequence[Counts]) -> np.ndarray:
  """[S] the "cautious" combination (module doc, 8): per schedule the least of the incremental,
  additive and per-image predictions."""
  if not len(schedules):
    return np.empty(0)
  combined = [[solve.predict_schedule(models[name], c)[1] for c in schedules]
              for name in ("incremental", "additive")]
  return np.minimum(np.min(np.asarray(combined), axis=0),
                    solve.per_image_accuracy(table, schedules))


def errors(pred: Sequence[float], meas: Sequence[float], full: float) -> Dict[str, Any]:
  """Points (pred - meas) over all schedules and over those with measured drop < 10 points."""
  p, m = 100 * np.asarray(pred), 100 * np.asarray(meas)
  e = p - m
  out = {}
  for name, sel in (("all", np.ones(e.size, bool)), ("drop_lt_10", 100 * full - m < 10)):
    x = e[sel]
    out[name] = ({"count": int(x.size), "mean": float(np.mean(np.abs(x))),
                  "max": float(np.max(np.abs(x))), "mean_signed": float(np.mean(x))}
                 if x.size else {"count": 0})
  return out


def enumerate_schedules(model: solve.CostModel, limit: int) -> Optional[np.ndarray]:
  """[S, depth + 1] grid indices of every schedule the solver could return under `model`
  (non-increasing, counts[0] = N, reductions only where allowed and within the per-block
  cap), or None when there are more than `limit`."""
  k, depth = model.ns.size, model.depth
  min_keep = model.min_keep if model.min_keep is not None else np.zeros(k, np.int64)
  rows = [np.array([[k - 1]], np.int64)]
  for l in range(depth):
    nxt = []
    for row in rows[-1]:
      src = int(row[-1])
      dsts = [src] + ([j for j in range(src) if model.ns[j] >= min_keep[src]]
                      if model.can_reduce[l] else [])
      nxt.extend(list(row) + [j] for j in dsts)
      if len(nxt) > limit:
        return None
    rows.append(np.array(nxt, np.int64))
  return rows[-1]


def own_frontier(model: solve.CostModel, score: Callable[[List[Counts]], np.ndarray], num: int,
                 limit: int) -> Tuple[List[Counts], Optional[int]]:
  """Schedules spread over the Pareto frontier of a model that scores every schedule (cost:
  `model`'s latency side, accuracy: `score`, e.g. `solve.per_image_accuracy`) -> (up to `num`
  counts, schedules scored), or ([], None) when there are more than `limit` schedules (or
  `limit` is 0)."""
  idx = enumerate_schedules(model, limit) if limit else None
  if idx is None:
    return [], None
  counts = model.ns[idx]
  lat = solve.schedule_latencies(model, idx)
  acc = score(counts.tolist())
  keep = solve.nondominated(lat, acc, counts.sum(axis=1))
  front = [tuple(int(c) for c in counts[i]) for i in sorted(keep, key=lambda i: lat[i])]
  if len(front) > num:
    front = list(dict.fromkeys(front[round(i * (len(front) - 1) / (num - 1))]
                               for i in range(num)))
  return front, len(counts)


def parse_floors(text: str) -> List[float]:
  """--floors: comma-separated accuracies in (0, 1], checked before any measurement."""
  out = []
  if not text.strip():                 # the floor table came out empty
    raise ValueError(f"--floors={text!r} names no floor")
  for v in text.split(","):
    if not v.strip():                  # (dropped unsaid)
      raise ValueError(f"--floors={text!r} has an empty entry")
    try:
      floor = float(v)
    except ValueError:
      raise ValueError(f"--floors: {v.strip()!r} is not a number") from None
    if not 0 < floor <= 1:
      raise ValueError(f"--floors: {floor} is not an accuracy in (0, 1]")
    if floor in out:                   # its row was printed twice
      raise ValueError(f"--floors gives {floor} twice")
    out.append(floor)
  return out


def random_multilayer(num_tokens: int, depth: int, grid: List[int], num: int, *, seed: int,
                      max_remove) -> List[Tuple[int, ...]]:
  """The first `num` of 4 x `num` distinct random schedules on `grid` that have 2 to 5
  reductions; ValueError naming --num_random where the grid gives fewer."""
  draws = latency_model.sample_schedules(
      num_tokens, depth, grid, 4 * num, seed=seed, max_reductions=min(5, depth),
      max_remove=max_remove, spread=False, at_most=True)
  out = [c for c in draws if len(Schedule(c).reduction_layers) >= 2][:num]
  if len(out) < num:
    raise ValueError(f"--num_random={num}: only {len(out)} of the {len(draws)} distinct random "
                     "schedules drawn on this grid have 2 or more reductions; ask for fewer")
  return out


def main(f: flags.FlagValues) -> Dict[str, Any]:
  """Measures, prints the table, writes --out -> the result."""
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  floors = parse_floors(f.floors)
  if f["floors"].present and not f.refine_rounds:      # no refinement: no floor table
    raise ValueError("--floors sets the refinement's floor table, and --refine_rounds=0 runs "
                     "no refinement")
  quick = f.quick

  def smoke(flag: str, value):     # --quick's value, unless the flag was given
    return value if quick and not f[flag].present else f[flag].value

  cfg, params, source = common.load_model("vit_digits", None)   # the embedded trained weights
  common.check_digits_split(source, "digits")         # (retrained in place with another split)
  base = parse_conditional(f.conditional, cfg)
  options = common.parse_method_options(f.method_opts)
  reducer = make_reducer(f.method, **options)
  limit = latency_model.method_limit(cfg, f.method)
  if base and base[1] < cfg.num_tokens - limit(cfg.num_tokens):
    raise ValueError(f"--conditional: {f.method} keeps at least "
                     f"{cfg.num_tokens - limit(cfg.num_tokens)} of {cfg.num_tokens} tokens in "
                     f"one block, so block {base[0]} cannot reduce to {base[1]}")
  data = estimate_lib.load_eval_data("digits", num_images=smoke("num_images", 60),
                                     class_names=common.class_names(source),
                                     num_classes=cfg.num_classes)
  evaluate = estimate_lib.schedule_evaluator(cfg, params, data, reducer, batch_size=64)
  n_full, depth = cfg.num_tokens, cfg.depth
  step = smoke("step", 24)
  counts = list(range(n_full, cfg.num_prefix_tokens, -step))
  if len(counts) < 2:      # (refused by one_block_counts, without naming --step)
    raise ValueError(f"--step={step} leaves no count below all {n_full} tokens on the grid: "
                     "give a smaller --step")
  grid = one_block_counts(cfg, counts, reducer)
  ns = np.array(grid + [n_full], np.int64)
  cond = conditional_schedules(cfg, base, list(ns), limit) if base else []
  pairwise = parse_pairwise(f.pairwise, ns.tolist())
  pairs = pair_schedules(cfg, ns.tolist(), *pairwise, limit) if pairwise else []
  if pairwise and not pairs:
    raise ValueError(f"--pairwise={f.pairwise}: {f.method} reaches none of those first cuts "
                     "with a second cut on the grid, so nothing pairwise would be measured")
  if base and not cond:      # (its rows fell back to the incremental numbers, unsaid)
    raise ValueError(f"--conditional={f.conditional}: no count of the grid "
                     f"{sorted(ns.tolist(), reverse=True)} below {base[1]} is reachable from it "
                     "in one later block, so nothing conditional would be measured")
  t0 = time.perf_counter()

  def log(s):
    print(f"[{time.perf_counter() - t0:5.0f} s] {s}", file=sys.stderr)

  rand = random_multilayer(n_full, depth, list(ns), smoke("num_random", 3), seed=f.seed,
                           max_remove=limit)     # drawn before measuring: too many is refused
  log(f"sensitivity: {depth} blocks x {len(grid)} counts, {len(data.indices)} images")
  (full_acc, *single), margins = evaluate([schedule_lib.embed_counts(n_full, depth)] + [
      schedule_lib.layer_counts(n_full, n, depth, l) for l in range(depth) for n in grid],
                                          margins=True)
  sens = np.array(single).reshape(depth, len(grid))
  per_image = solve.MarginTable.build(ns, margins[0],
                                      margins[1:].reshape(depth, len(grid), -1))
  sens = np.concatenate([sens, np.full((depth, 1), full_acc)], axis=1)
  flop = np.array([block_flop(cfg, int(n)) for n in ns], np.float64)
  caps = solve_stage.method_caps(cfg, f.method, ns)
  models = {name: solve.make_cost_model(ns, flop, sens, full_acc, depth=depth,
                                        num_tokens=n_full, accuracy_model=name, max_remove=caps)
            for name in solve.ACCURACY_MODELS}
  num_frontier = smoke("num_frontier", 3)
  frontier = [p.counts for p in solve.pareto_frontier(models["incremental"])]
  if len(frontier) > num_frontier:   # spread over the frontier
    k = num_frontier
    frontier = list(dict.fromkeys(frontier[round(i * (len(frontier) - 1) / (k - 1))]
                                  for i in range(k)))
  cond_base = [schedule_lib.layer_counts(n_full, base[1], depth, base[0])] if base else []
  log(f"measuring {len(rand)} random, {len(frontier)} frontier"
      + (f" and {len(cond) + 1} conditional (after {base[1]} tokens at block {base[0]})"
         if base else "") + " schedules")
  own, scored = own_frontier(models["incremental"],
                             lambda c: solve.per_image_accuracy(per_image, c), num_frontier,
                             f.enumerate_limit)
  log(f"per-image frontier: {len(own)} of the schedules spread over it "
      f"({scored} scored)" if own else "per-image frontier skipped (more schedules than "
      f"--enumerate_limit={f.enumerate_limit})")
  measured = evaluate(rand + frontier + cond_base + cond)
  pair_model = None
  if pairs:
    log(f"measuring {len(pairs)} two-cut schedules (--pairwise={f.pairwise})")
    pair_model = PairInteractions(per_image, dict(zip(pairs, evaluate(pairs, margins=True)[1])))
  m_rand, m_front = measured[:len(rand)], measured[len(rand):len(rand) + len(frontier)]
  rows = (conditional_rows(cfg, base, cond_base + cond, measured[len(rand) + len(frontier):])
          if base else None)

  def predictions(schedules):
    out = {name: [solve.predict_schedule(m, c)[1] for c in schedules]
           for name, m in models.items()}
    out["per-image"] = solve.per_image_accuracy(per_image, schedules).tolist()
    out["cautious"] = cautious_accuracy(models, per_image, schedules).tolist()
    if pair_model is not None:
      out["pairwise"] = pair_model.accuracy(schedules).tolist()
    if rows is not None:
      out["conditional"] = [full_acc - conditional_drop(models["incremental"], base, rows, c)
                            for c in schedules]
    return out

  result = {"format": RESULT_FORMAT,
            "command": common.command_line("benchmarks.accuracy_combination", f),
            "method": f.method, "method_options": reducer_fields(reducer),   # (defaults too)
            "num_images": int(len(data.indices)), "grid": ns.tolist(),
            "full_accuracy": full_acc, "conditional_base": list(base) if base else None,
            "sensitivity": {str(l): dict(zip(map(str, ns.tolist()), sens[l].tolist()))
                            for l in range(depth)},
            "conditional": ({"base_accuracy": measured[len(rand) + len(frontier)],
                             "rows": {str(l): {str(n): v for n, v in sorted(r.items())}
                                      for l, r in sorted(rows.items())}}
                            if base else None),
            "pairwise": (None if pair_model is None else
                         {"firsts": list(pairwise[0]), "step": pairwise[1],
                          "schedules": len(pairs)}),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "families": {}}
  families = [("random", rand, m_rand), ("frontier", frontier, m_front)]
  if own:
    families.append(("per-image frontier", own, evaluate(own)))
  result["per_image_enumerated"] = scored
  cautious_own, _ = own_frontier(models["incremental"],
                                 lambda c: cautious_accuracy(models, per_image, c),
                                 num_frontier, f.enumerate_limit)
  if cautious_own:
    log(f"cautious frontier: measuring {len(cautious_own)} of the schedules spread over it")
    families.append(("cautious frontier", cautious_own, evaluate(cautious_own)))
  if pair_model is not None:
    pair_own, _ = own_frontier(models["incremental"], pair_model.accuracy, num_frontier,
                               f.enumerate_limit)
    if pair_own:
      log(f"pairwise frontier: measuring {len(pair_own)} of the schedules spread over it")
      families.append(("pairwise frontier", pair_own, evaluate(pair_own)))
    else:
      log(f"pairwise frontier skipped (more schedules than --enumerate_limit="
          f"{f.enumerate_limit})")
  for fam, scheds, meas in families:
    pred = predictions(scheds)
    if fam.endswith(" frontier"):      # (the conditional rows are about the solver's)
      pred.pop("conditional", None)
    result["families"][fam] = {
        "errors": {name: errors(p, meas, full_acc) for name, p in pred.items()},
        "schedules": [dict({"counts": list(c), "measured": a},
                           **{name: p[i] for name, p in pred.items()})
                      for i, (c, a) in enumerate(zip(scheds, meas))]}
  if f.refine_rounds:
    log(f"refinement: up to {smoke('refine_rounds', 2)} rounds")
    result["refinement"] = refinement(models["incremental"], evaluate,
                                      smoke("refine_rounds", 2), floors, flop,
                                      dict(zip(rand, m_rand)), per_image)
  result["seconds"] = time.perf_counter() - t0
  print(table(result))
  if "refinement" in result:
    print()
    print(refinement_table(result["refinement"]))
  common.write_result(f.out, result, RESULT_FORMAT, indent=1)
  print(f"wrote {f.out}")
  return result


def refinement(model: solve.CostModel, evaluate, rounds: int, floors: Sequence[float],
               flop: np.ndarray, random: Dict[Counts, float],
               table: solve.MarginTable) -> Dict[str, Any]:
  """The measured correction on `model` (FLOP latency): rounds (each one's multi-layer schedules
  predicted before measuring by the corrected model and by `solve.anchored_accuracy`; single
  reductions, the table's own points, are counted as "unscored"), held-out random
  schedules, and per floor the fewest FLOP meeting it before (the uncorrected frontier, all
  measured) and after (everything the refinement measured)."""
  ref = solve.refine_frontier(model, evaluate, rounds=rounds, table=table)
  full = model.full_accuracy
  out: Dict[str, Any] = {"converged": ref.converged, "measured": len(ref.measured), "rounds": []}
  for r in ref.rounds:
    # A single reduction (or none) is a point of the sensitivity table measured above on these
    # images: measured again where a frontier holds it, not scored (in sample).
    scored = [i for i, p in enumerate(r.new) if solve.is_multi_reduction(p.counts)]
    new = [r.new[i] for i in scored]
    anchored = [r.anchored[i] for i in scored]
    meas = [ref.measured[p.counts] for p in new]
    out["rounds"].append({"round": r.index, "frontier": r.frontier_size,
                          "fitted_on": r.fitted_on, "unscored": len(r.new) - len(new),
                          "errors": errors([p.accuracy for p in new], meas, full),
                          "anchored_errors": errors(anchored, meas, full),
                          "schedules": [{"counts": list(p.counts), "measured": m,
                                         "corrected": p.accuracy, "anchored": a}
                                        for p, m, a in zip(new, meas, anchored)]})
  out["pooled"] = pooled_rounds(out["rounds"], full)
  held = [c for c in random if c not in ref.measured]
  out["random_held_out"] = {
      name: errors([solve.predict_schedule(m, c)[1] for c in held], [random[c] for c in held],
                   full) for name, m in (("incremental", model), ("refined", ref.model))}
  out["random_held_out"]["anchored"] = errors(
      solve.anchored_accuracy(table, ref.margins, held), [random[c] for c in held], full)
  pos = {int(n): i for i, n in enumerate(model.ns)}

  def cost(c):
    return float(sum(flop[pos[n]] for n in c[:-1]))

  base = ref.rounds[0].new
  out["floors"] = []
  for floor in floors:
    try:
      pick, _ = solve.choose(base, accuracy_floor=floor)
      own = {"counts": list(pick.counts), "predicted": pick.accuracy,
             "measured": ref.measured[pick.counts]}
    except ValueError:
      own = None
    row = {"floor": floor, "uncorrected_choice": own}
    for name, pool in (("before", [p.counts for p in base]), ("after", list(ref.measured))):
      ok = [c for c in pool if solve.meets_floor(ref.measured[c], floor)]
      best = min(ok, key=cost) if ok else None
      row[name] = (None if best is None else
                   {"counts": list(best), "flop": cost(best), "measured": ref.measured[best]})
    out["floors"].append(row)
  return out


# The accuracy target ("Predictions that hold"): |error| mean and max, points.
TARGET_MEAN, TARGET_MAX = 0.5, 2.0


def meets_target(e: Dict[str, Any]) -> Optional[bool]:
  """Whether an `errors` entry is within TARGET_MEAN / TARGET_MAX points (None: no schedule)."""
  if not e["count"]:
    return None
  return bool(e["mean"] <= TARGET_MEAN and e["max"] <= TARGET_MAX)


def pooled_rounds(rounds: Sequence[Dict[str, Any]], full: float) -> Dict[str, Any]:
  """The refinement's schedules pooled from round 1 and from round 2 on (each predicted before
  measuring it, by the corrected model and anchored), with whether each meets the target."""
  out = {}
  for first in (1, 2):
    rows = [s for r in rounds if r["round"] >= first for s in r["schedules"]]
    meas = [s["measured"] for s in rows]
    entry = {}
    for name in ("corrected", "anchored"):
      entry[name] = {k: dict(e, meets_target=meets_target(e))
                     for k, e in errors([s[name] for s in rows], meas, full).items()}
    out[f"from_round_{first}"] = entry
  return out


def refinement_table(ref: Dict[str, Any]) -> str:
  """Markdown: one row per refinement round, then one per floor."""
  lines = ["| round | frontier | fitted on | measured this round: n, mean / max abs err, mean "
           "signed (points, predicted before measuring) | of those, measured drop < 10 points |"
           " anchored: all | anchored: drop < 10 points |",
           "|---|---|---|---|---|---|---|"]

  def cell(e):
    if not e["count"]:
      return "0"
    return f"{e['count']}, {e['mean']:.2f} / {e['max']:.2f}, {e['mean_signed']:+.2f}"

  for r in ref["rounds"]:
    a = r["anchored_errors"]
    lines.append(f"| {r['round']} | {r['frontier']} | {r['fitted_on']} | "
                 f"{cell(r['errors']['all'])} | {cell(r['errors']['drop_lt_10'])} | "
                 f"{cell(a['all'])} | {cell(a['drop_lt_10'])} |")
  for key, pool in ref.get("pooled", {}).items():       # (absent in JSON written before it)
    c, a = pool["corrected"], pool["anchored"]
    lines.append(f"| {key.replace('_', ' ')} on, pooled | | | {cell(c['all'])} | "
                 f"{cell(c['drop_lt_10'])} | {cell(a['all'])}{_verdict(a['all'])} | "
                 f"{cell(a['drop_lt_10'])}{_verdict(a['drop_lt_10'])} |")
  unscored = sum(r.get("unscored", 0) for r in ref["rounds"])   # (absent: written before it)
  if unscored:
    lines += ["", f"Not scored: {console.counted(unscored, 'single reduction')} on a frontier "
                  "(points of the sensitivity table, measured above: in sample)."]
  lines += ["", "| random schedules never measured by it | all | drop < 10 points |",
            "|---|---|---|"]
  for name, e in ref["random_held_out"].items():
    lines.append(f"| {name} | {cell(e['all'])} | {cell(e['drop_lt_10'])} |")
  lines += ["", "| floor | uncorrected model's choice: predicted / measured | fewest MFLOP "
            "meeting it: uncorrected frontier | after refinement |", "|---|---|---|---|"]
  for row in ref["floors"]:
    own = row["uncorrected_choice"]
    mine = "infeasible" if own is None else f"{own['predicted']:.4f} / {own['measured']:.4f}"
    cells = ["none" if row[k] is None else
             f"{row[k]['flop'] / 1e6:.2f} ({','.join(map(str, row[k]['counts']))})"
             for k in ("before", "after")]
    lines.append(f"| {row['floor']} | {mine} | {cells[0]} | {cells[1]} |")
  return "\n".join(lines)


def _verdict(e: Dict[str, Any]) -> str:
  """' (target met)' / ' (target missed)' for a pooled cell (`meets_target`)."""
  met = e["meets_target"]
  return "" if met is None else f" (target {'met' if met else 'missed'})"


def table(result: Dict[str, Any]) -> str:
  """Markdown: one row per (family, combination model)."""
  lines = ["| schedules | combination | all: n, mean / max abs err, mean signed (points) | "
           "measured drop < 10 points: same |", "|---|---|---|---|"]

  def cell(e):
    if not e["count"]:
      return "0"
    return f"{e['count']}, {e['mean']:.2f} / {e['max']:.2f}, {e['mean_signed']:+.2f}"

  for fam, r in result["families"].items():
    for name, e in r["errors"].items():
      lines.append(f"| {fam} | {name} | {cell(e['all'])} | {cell(e['drop_lt_10'])} |")
  return "\n".join(lines)


if __name__ == "__main__":
  common.run(main, define_flags)
