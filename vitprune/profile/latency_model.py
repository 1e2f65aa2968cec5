"""A latency model of the compiled graph, calibrated on whole compiled graphs.

Why: a block timed alone costs about twice what it costs inside the whole forward (one call per
part, no fusion across blocks, cold caches), so the per-block sum of `predict.py` over-predicts
every schedule. Here a block's cost comes from whole graphs instead:

  * the uniform-count curve U(n) (profile mode 'model': tokens dropped after the embedding, every
    block at n) gives the shape of the in-graph block cost, s(n) = U(n) / depth;
  * a few measured multi-layer calibration schedules of the method (whole graphs, the profiler's
    protocol, one shuffled measurement with the curve), together with the uniform graphs
    themselves, fit by least squares

      pred(counts) = const + scale * sum_{l < depth} s(c_l)
                     + mlp * (s(c_depth) - s(c_0))
                     + sum_{l reduces} (r0 + r1 * c_l / N)
                     + post * sum_{l < depth, c_l < c_0} s(c_l)

    with c = counts (c_0 = N), 0 <= mlp <= scale, r0, r1, post >= 0 (bounded least squares on
    relative error).
    `mlp`: a reducing block runs its MLP at the output count (`model.block` reduces between the
    attention and the MLP); summed over the blocks that is sum_l b(c_l) + phi * (b(c_depth) -
    b(c_0)) with phi the MLP's share of a block, exactly one per-count term at the final count.
    r0 + r1 c_l / N: the reduction itself (scoring, top-k or matching, gather), a function of the
    reducing block's input count.
    `post`: what a block costs beyond the uniform graph's once a block has reduced (ToMe carries
    token sizes into proportional attention in every later block, which leaves the fused
    attention path); 0 for methods whose later blocks are plain. In the DP (c_0 = N) it is a
    per-count term on counts below N. Files written before it existed load with post = 0.

The model stays additive per block, so the exact multi-layer DP applies unchanged
(`dp_arrays`: per-count block cost, per-count reduce cost, head cost at the final count, one
constant). `LatencyModel` is a frozen record (no jax here; `to_json` / `from_json`) with its own
residuals on the calibration schedules in which a block reduces (the uniform graphs are fitted
too, but the curve's own shape reproduces them almost by construction: scored with them, a model
that misses every multi-layer graph by 20 % reported a p90 under 10 %), the count range those
schedules calibrated and `trust(counts)` saying why a prediction should not be trusted.
`measure_calibration` (jax, imported lazily) measures the curve and the calibration schedules;
`fit` refuses data of another model, device, dtype or batch size.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitprune import console, jsonio
from vitprune.config import config_from_dict
from vitprune.profile import records

FORMAT = "vitprune-latency-model"
VERSION = 1
SOURCE = "calibrated-graph"
PARAMS = ("const", "scale", "mlp", "r0", "r1", "post")
OPTIONAL_PARAMS = {"post": 0.0}     # absent in files written before the parameter existed
# The uniform graphs pin const and scale; the calibration schedules must carry the reduction
# terms (mlp, r0, r1, post), so at least one schedule per term.
MIN_CALIBRATION_SCHEDULES = len(PARAMS) - 2
# Each calibration schedule is a graph compiled and timed: beyond this a run takes hours (and
# drawing that many distinct schedules from a small grid gives up only after many tries).
MAX_CALIBRATION_SCHEDULES = 1000
# The main job's count: `python -m benchmarks.calibration_size` measured 10 no better than 6 on
# held-out schedules beyond the machine's re-measurement noise for most methods (a few points of
# p90 for some), at 1.7x the compile time.
DEFAULT_CALIBRATION_SCHEDULES = 6
DEFAULT_MAX_RESIDUAL = 0.10   # p90 |relative error| on the reducing calibration schedules above
                              # this: untrusted


def params_problem(params: Any) -> Optional[str]:
  """Why `params` are not a fit's (`fit_arrays` bounds them: const finite, 0 <= mlp <= scale,
  r0, r1, post >= 0; an absent optional one reads as its default), or None."""
  if not isinstance(params, dict) or not all(
      jsonio.is_num(params.get(k)) or (k in OPTIONAL_PARAMS and k not in params)
      for k in PARAMS):
    return f"params must hold numbers {PARAMS}, got {params!r}"
  p = {k: float(params.get(k, OPTIONAL_PARAMS.get(k))) for k in PARAMS}
  if not (0 <= p["mlp"] <= p["scale"] and min(p["r0"], p["r1"], p["post"]) >= 0):
    return (f"params must have 0 <= mlp <= scale and r0, r1, post >= 0 (the fit's bounds), got "
            f"{params!r}")
  return None


class CalibrationError(ValueError):
  """Calibration data that cannot be used (another model, device, dtype, batch size or method,
  or too little of it)."""


class LatencyModelError(jsonio.FormatError):
  """A latency-model document that does not follow the format."""


Counts = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LatencyModel:
  """Seconds of the compiled forward of any schedule of one model, method, device, dtype and
  batch size (see the module docstring). `tokens` ascending, `curve_s` U(n) at those counts."""
  model: str
  config: Dict[str, Any]
  device_kind: str
  platform: str
  dtype: str
  batch_size: int
  method: str
  tokens: Tuple[int, ...]
  curve_s: Tuple[float, ...]
  params: Dict[str, float]
  calibration: Tuple[Counts, ...]          # the schedules fitted (full schedule included)
  calibration_s: Tuple[float, ...]         # their measured medians
  max_residual: float = DEFAULT_MAX_RESIDUAL
  source: str = SOURCE

  def __post_init__(self):
    # The JSON form of the config (tuples -> lists), as `records.Profile` keeps it.
    object.__setattr__(self, "config", jsonio.json_form(self.config))
    object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
    object.__setattr__(self, "curve_s", tuple(float(v) for v in self.curve_s))
    object.__setattr__(self, "calibration", tuple(tuple(int(c) for c in s)
                                                  for s in self.calibration))
    object.__setattr__(self, "calibration_s", tuple(float(v) for v in self.calibration_s))
    object.__setattr__(self, "params", {k: float(self.params[k] if k in self.params else
                                                  OPTIONAL_PARAMS[k]) for k in PARAMS})
    if len(self.tokens) != len(self.curve_s) or len(self.tokens) < 2:
      raise ValueError(f"need >= 2 curve points with one latency each, got {len(self.tokens)} "
                       f"counts and {len(self.curve_s)} latencies")
    if list(self.tokens) != sorted(set(self.tokens)):
      raise ValueError(f"curve tokens must be ascending and distinct, got {self.tokens}")
    if len(self.calibration) != len(self.calibration_s):
      raise ValueError("one measured latency per calibration schedule")
    if not any(reduces(c) for c in self.calibration):
      raise ValueError("no calibration schedule reduces in a block: the reduction terms "
                       "cannot be calibrated")

  # -- the maths ----------------------------------------------------------------------------

  @property
  def depth(self) -> int:
    return int(self.config["depth"])

  @property
  def num_tokens(self) -> int:
    return self.tokens[-1]

  def shape(self, n) -> np.ndarray:
    """s(n) = U(n) / depth, linearly interpolated between curve counts (seconds)."""
    return np.interp(np.asarray(n, np.float64), self.tokens, self.curve_s) / self.depth

  def _check(self, counts: Sequence[int]) -> Counts:
    c = tuple(int(v) for v in counts)
    if len(c) != self.depth + 1:
      raise ValueError(f"schedule has {len(c)} counts, {self.model} needs {self.depth + 1}")
    lo, hi = self.tokens[0], self.tokens[-1]
    out = [v for v in c if not lo <= v <= hi]
    if out:
      raise ValueError(f"counts {out} are outside the measured curve {lo}..{hi} of the latency "
                       f"model; measure the curve there")
    grows = [l for l in range(self.depth) if c[l + 1] > c[l]]
    if grows:          # (no graph runs it; it was predicted all the same)
      raise ValueError(f"schedule counts must never increase: block {grows[0]} receives "
                       f"{c[grows[0]]} tokens and would emit {c[grows[0] + 1]}")
    return c

  def predict(self, counts: Sequence[int]) -> float:
    """Predicted seconds of the compiled forward under `counts` (depth + 1 counts)."""
    c = self._check(counts)
    return float(features(self, c) @ self._theta())

  def _theta(self) -> np.ndarray:
    return np.array([self.params[k] for k in PARAMS])

  def reduce_s(self, n) -> np.ndarray:
    """Extra seconds of a block that reduces, at `n` input tokens."""
    return self.params["r0"] + self.params["r1"] * np.asarray(n, np.float64) / self.num_tokens

  def dp_arrays(self, ns: Sequence[int]) -> Dict[str, Any]:
    """The DP's cost tables on the grid `ns` (must contain N): {'block' [K], 'reduce' [K],
    'head' [K], 'embed'} such that embed + sum_l (block[c_l] + reduce[c_l] if l reduces) +
    head[c_depth] == predict(c) for every schedule starting at N. Constants are moved between
    the parts (every schedule has exactly depth blocks and one head) to keep each >= 0; embed
    stays negative only where block 0 (always at N) covers it: no schedule is predicted to take
    negative time (a steep curve with a large MLP shift was refused although every prediction
    was positive)."""
    ns = np.asarray([int(n) for n in ns])
    if self.num_tokens not in set(ns.tolist()):
      raise ValueError(f"grid must contain the full count {self.num_tokens}")
    p = self.params
    s = self.shape(ns)
    s_full = float(self.shape(self.num_tokens))
    block = p["scale"] * s + p["post"] * s * (ns < self.num_tokens)
    head = p["mlp"] * s
    embed = p["const"] - p["mlp"] * s_full
    shift = min(float(block.min()), max(0.0, -embed) / self.depth)
    block, embed = block - shift, embed + self.depth * shift
    shift = min(float(head.min()), max(0.0, -embed))
    head, embed = head - shift, embed + shift
    # Round-off of the shifts (~1e-22 s) is not a negative time: tolerate it relative to the scale.
    tol = 1e-9 * (abs(p["const"]) + self.depth * float(np.abs(block).max()) +
                  float(np.abs(head).max()))
    cheapest = (embed + float(block[ns == self.num_tokens][0]) +
                (self.depth - 1) * float(block.min()) + float(head.min()))
    if cheapest < -tol:
      raise ValueError(f"the latency model of {self.model} predicts negative time for short "
                       f"schedules (a lower bound of {cheapest:.3g} s); recalibrate")
    return {"block": block, "reduce": self.reduce_s(ns), "head": head,
            "embed": float(embed) if embed < -tol else max(float(embed), 0.0)}

  # -- how good it is -----------------------------------------------------------------------

  def residuals(self) -> np.ndarray:
    """(predicted - measured) / measured on the calibration set [S] (uniform graphs included)."""
    pred = np.array([self.predict(c) for c in self.calibration])
    meas = np.asarray(self.calibration_s)
    return (pred - meas) / meas

  @property
  def reducing(self) -> np.ndarray:
    """[S] bool: the calibration schedules in which some block reduces (what the reduction
    terms are fitted on, and what the residual statistics and the calibrated range describe)."""
    return np.array([reduces(c) for c in self.calibration], bool)

  @property
  def residual_median(self) -> float:
    """Median |relative error| on the calibration schedules that reduce."""
    return float(np.median(np.abs(self.residuals()[self.reducing])))

  @property
  def residual_p90(self) -> float:
    """p90 |relative error| on the calibration schedules that reduce."""
    return float(np.percentile(np.abs(self.residuals()[self.reducing]), 90))

  @property
  def calibrated_range(self) -> Tuple[int, int]:
    """Smallest and largest count the calibration schedules that reduce used."""
    used = [c for s, r in zip(self.calibration, self.reducing) if r for c in s]
    return min(used), max(used)

  def trust(self, counts: Sequence[int]) -> Optional[str]:
    """None when the prediction for `counts` can be trusted, else why not (one line)."""
    lo, hi = self.calibrated_range
    c = tuple(int(v) for v in counts)
    out = sorted({v for v in c if not lo <= v <= hi})
    if out:
      return (f"counts {out} are outside the calibrated range {lo}..{hi} of the "
              f"{self.method} latency model")
    if self.residual_p90 > self.max_residual:
      limit = 100 * self.max_residual
      shown = console.shown_apart(100 * self.residual_p90, limit, 1, "f")[0]
      return (f"the {self.method} latency model's p90 calibration error {shown}% exceeds "
              f"{limit:g}%")
    return None

  def summary(self) -> Dict[str, Any]:
    """What a Solution records about the latency model (its `settings['latency_model']`)."""
    return {"source": self.source, "method": self.method, "batch_size": self.batch_size,
            "dtype": self.dtype, "device_kind": self.device_kind,
            "params": dict(self.params), "num_calibration": len(self.calibration),
            "num_reducing": int(self.reducing.sum()),
            "calibrated_range": list(self.calibrated_range),
            "residual_median": self.residual_median, "residual_p90": self.residual_p90}

  # -- the record -----------------------------------------------------------------------------

  def to_json(self) -> Dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "source": self.source, "model": self.model,
            "config": self.config, "device_kind": self.device_kind, "platform": self.platform,
            "dtype": self.dtype, "batch_size": self.batch_size, "method": self.method,
            "tokens": list(self.tokens), "curve_s": list(self.curve_s),
            "params": dict(self.params),
            "calibration": [{"counts": list(c), "measured_s": s}
                            for c, s in zip(self.calibration, self.calibration_s)],
            "max_residual": self.max_residual,
            "residual_median": self.residual_median, "residual_p90": self.residual_p90}

  @classmethod
  def from_json(cls, doc: Any, where: str = "latency model") -> "LatencyModel":
    jsonio.check_format(doc, where, FORMAT, (VERSION,), LatencyModelError)
    keys = ("model", "config", "device_kind", "platform", "dtype", "batch_size", "method",
            "tokens", "curve_s", "params", "calibration")
    jsonio.require_keys(doc, keys, where, LatencyModelError)
    params = doc["params"]
    problem = params_problem(params)
    jsonio.require(not problem, where, problem, LatencyModelError)
    cal = doc["calibration"]
    jsonio.require(isinstance(cal, list) and all(isinstance(c, dict) and "counts" in c and
                                                 jsonio.is_num(c.get("measured_s"))
                                                 for c in cal),
                   where, "calibration must be a list of {counts, measured_s}",
                   LatencyModelError)
    try:
      config_from_dict(doc["config"])      # (a partial config loaded: KeyError 'depth' later)
      return cls(model=str(doc["model"]), config=dict(doc["config"]),
                 device_kind=str(doc["device_kind"]), platform=str(doc["platform"]),
                 dtype=str(doc["dtype"]), batch_size=int(doc["batch_size"]),
                 method=str(doc["method"]), tokens=tuple(doc["tokens"]),
                 curve_s=tuple(doc["curve_s"]), params=params,
                 calibration=tuple(tuple(c["counts"]) for c in cal),
                 calibration_s=tuple(c["measured_s"] for c in cal),
                 max_residual=float(doc.get("max_residual", DEFAULT_MAX_RESIDUAL)),
                 source=str(doc.get("source", SOURCE)))
    except (TypeError, ValueError) as e:
      raise LatencyModelError(f"{where}: {e}") from None


def reduces(counts: Sequence[int]) -> bool:
  """True when some block of the schedule reduces (counts not all equal; a uniform graph drops
  its tokens after the embedding and runs every block at one count)."""
  return len(set(counts)) > 1


def features(lm: LatencyModel, counts: Counts) -> np.ndarray:
  """The fit's regressors of one schedule, in `PARAMS` order."""
  c = np.asarray(counts, np.float64)
  d = lm.depth
  s = lm.shape(c)
  red = c[1:] < c[:-1]
  after = c[:d] < c[0]
  return np.array([1.0, float(s[:d].sum()), float(s[d] - s[0]), float(red.sum()),
                   float((c[:d][red] / lm.num_tokens).sum()), float(s[:d][after].sum())])


# ----------------------------------------------------------------------------------------------
# Fitting.

def check_compatible(curve: records.Profile, calibration: records.Profile, batch_size: int
                     ) -> None:
  """CalibrationError (one line) unless both profiles are of the same model config, device,
  platform and dtype and both hold points at `batch_size`."""
  diff = records.setup_mismatch(curve, calibration)
  if diff:
    raise CalibrationError(f"calibration data {calibration.source} is for {diff[0]} "
                           f"{diff[2]!r} but the curve {curve.source} is for {diff[1]!r}")
  for prof, kind in ((curve, "model"), (calibration, "schedule")):
    have = sorted({p.batch_size for p in prof.points if p.component == kind})
    if batch_size not in have:
      raise CalibrationError(f"{prof.source} has no {kind} points at batch size {batch_size} "
                             f"(has {have}): calibration data of another batch size")


def fit(curve: records.Profile, calibration: Optional[records.Profile] = None, *,
        batch_size: int, method: str, max_residual: float = DEFAULT_MAX_RESIDUAL,
        include_curve: bool = True) -> LatencyModel:
  """Fits the latency model from the uniform curve ('model' points of `curve`) and the measured
  calibration schedules ('schedule' points of `calibration`, default `curve` itself) at
  `batch_size`. The full schedule is taken from the curve (U(N)) when not calibrated itself.
  `include_curve`: the uniform graphs (n,) * (depth + 1) are fitted too (they are compiled
  graphs as well; they pin scale and constant, so a few noisy calibration schedules cannot
  trade one against the other)."""
  calibration = curve if calibration is None else calibration
  check_compatible(curve, calibration, batch_size)
  pts = sorted(curve.curve("model", batch_size), key=lambda p: p.tokens)
  cfg = config_from_dict(curve.config)
  n_full, depth = cfg.num_tokens, cfg.depth
  tokens = tuple(p.tokens for p in pts)
  if len(tokens) < 2 or tokens[-1] != n_full:
    raise CalibrationError(f"{curve.source}: the uniform curve at batch {batch_size} needs >= 2 "
                           f"counts including the full {n_full}, has {list(tokens)}")
  sched = {p.schedule: p.median_s for p in calibration.curve("schedule", batch_size)}
  sched.setdefault((n_full,) * (depth + 1), pts[-1].median_s)
  if include_curve:
    for p in pts:
      sched.setdefault((p.tokens,) * (depth + 1), p.median_s)
  return fit_arrays(model=curve.model, config=curve.config, device_kind=curve.device_kind,
                    platform=curve.platform, dtype=curve.dtype, batch_size=batch_size,
                    method=method, tokens=tokens, curve_s=[p.median_s for p in pts],
                    schedules=list(sched), measured_s=list(sched.values()),
                    max_residual=max_residual)


def fit_arrays(*, model: str, config: Dict[str, Any], device_kind: str, platform: str,
               dtype: str, batch_size: int, method: str, tokens: Sequence[int],
               curve_s: Sequence[float], schedules: Sequence[Sequence[int]],
               measured_s: Sequence[float], max_residual: float = DEFAULT_MAX_RESIDUAL
               ) -> LatencyModel:
  """The bounded least-squares fit (relative error; 0 <= mlp <= scale; r0, r1 >= 0) on plain
  arrays: `schedules` [S] counts with their `measured_s` [S] medians, the curve U(`tokens`)."""
  from scipy.optimize import lsq_linear  # pylint: disable=g-import-not-at-top  (slow import)
  num_reducing = sum(reduces(c) for c in schedules)
  if num_reducing < MIN_CALIBRATION_SCHEDULES:
    raise CalibrationError(f"need >= {MIN_CALIBRATION_SCHEDULES} calibration schedules that "
                           f"reduce in some block (one per reduction term), got {num_reducing}")
  order = np.argsort(tokens)
  base = LatencyModel(model=model, config=dict(config), device_kind=device_kind,
                      platform=platform, dtype=dtype, batch_size=int(batch_size), method=method,
                      tokens=tuple(np.asarray(tokens)[order]),
                      curve_s=tuple(np.asarray(curve_s, np.float64)[order]),
                      params={k: 0.0 for k in PARAMS}, calibration=tuple(schedules),
                      calibration_s=tuple(measured_s), max_residual=max_residual)
  y = np.asarray(measured_s, np.float64)
  if y.size < len(PARAMS) or not np.all(np.isfinite(y)) or np.any(y <= 0):
    raise CalibrationError(f"need >= {len(PARAMS)} calibration schedules with positive finite "
                           f"latencies, got {y.size}")
  x = np.stack([features(base, base._check(c)) for c in base.calibration])
  # Solved for (const, scale - mlp, mlp, r0, r1, post), all but const >= 0: 0 <= mlp <= scale
  # (the MLP is a share of the block).
  x[:, 2] += x[:, 1]
  w = 1.0 / y
  lo = np.array([-np.inf, 0.0, 0.0, 0.0, 0.0, 0.0])
  res = lsq_linear(x * w[:, None], y * w, bounds=(lo, np.full(len(PARAMS), np.inf)),
                   method="bvls", lsmr_tol=None)
  # BVLS can return a bounded parameter a round-off below its bound (r1 = -1.7e-21 in a test
  # run, refused later as a negative reduction time): the bounds are the model's contract.
  const, rest, mlp, r0, r1, post = (float(v) for v in np.maximum(res.x, lo))
  return dataclasses.replace(base, params={"const": const, "scale": rest + mlp, "mlp": mlp,
                                           "r0": r0, "r1": r1, "post": post})


# ----------------------------------------------------------------------------------------------
# Calibration schedules and their measurement.

def sample_schedules(num_tokens: int, depth: int, grid: Sequence[int], num: int, *, seed: int,
                     max_remove: Optional[Callable[[int], int]] = None,
                     max_reductions: int = 3, exclude: Sequence[Sequence[int]] = (),
                     spread: bool = True, at_most: bool = False) -> List[Counts]:
  """`num` distinct random multi-layer schedules on `grid` (start at num_tokens, 1 to
  `max_reductions` reductions at random blocks, each within `max_remove(n_in)`), none in
  `exclude`. `spread`: the final counts are stratified over the grid (calibration). Fewer than
  `num` to be found: ValueError, or (`at_most`) the ones found."""
  rng = np.random.default_rng(seed)
  below = reachable_counts(num_tokens, depth, grid, max_remove)
  if not below:
    raise ValueError("the grid needs counts below the full count")
  seen = {tuple(int(c) for c in s) for s in exclude}
  out: List[Counts] = []
  tries = fails = 0
  # (1000 failed draws in a row: the grid holds no more; a larger `num` would try for hours)
  while len(out) < num and tries < 200 * max(num, 1) and fails < 1000:
    tries += 1
    i = len(out)
    if spread and num > 1:
      last = below[round(i * (len(below) - 1) / (num - 1))]
    else:
      last = int(rng.choice(below))
    # A method with a per-block cap (ToMe: half the tokens) may need more reductions to reach a
    # small final count: allow more as draws for this schedule keep failing.
    k_hi = min(depth, max_reductions + fails // 10)
    targets = _reduction_path(rng, num_tokens, last, int(rng.integers(1, k_hi + 1)), below,
                              max_remove)
    if targets is None:
      fails += 1
      continue
    layers = sorted(rng.choice(depth, size=len(targets), replace=False).tolist())
    counts, cur = [num_tokens], num_tokens
    for l in range(depth):
      if layers and l == layers[0]:
        layers.pop(0)
        cur = targets.pop(0)
      counts.append(cur)
    t = tuple(counts)
    if t in seen:
      fails += 1
      continue
    seen.add(t)
    out.append(t)
    fails = 0
  if len(out) < num and not at_most:
    raise ValueError(f"could only draw {len(out)} of {num} distinct schedules on this grid")
  return out


def reachable_counts(num_tokens: int, depth: int, grid: Sequence[int],
                     max_remove: Optional[Callable[[int], int]] = None) -> List[int]:
  """The counts of `grid` below num_tokens that some schedule on the grid reaches within `depth`
  blocks, each removing at most `max_remove(n_in)` (ToMe on DeiT-S's every-24th grid: 197 -> 101
  -> 53 -> 29, but not 5), ascending."""
  below = sorted({int(n) for n in grid if int(n) < num_tokens})
  reach, layer = set(), {num_tokens}
  for _ in range(depth):
    layer = {n for cur in layer for n in below
             if n < cur and (max_remove is None or cur - n <= max_remove(cur))} - reach
    if not layer:
      break
    reach |= layer
  return sorted(reach)


def _reduction_path(rng, start: int, last: int, k: int, below: Sequence[int],
                    max_remove: Optional[Callable[[int], int]]) -> Optional[List[int]]:
  """`k` strictly decreasing grid counts from `start` ending at `last`, each step within
  `max_remove(n_in)`, drawn at random; None when this draw cannot reach `last`."""
  targets, cur = [], start
  for j in range(k, 0, -1):
    cand = [last] if j == 1 else [n for n in below if last < n < cur]
    cand = [n for n in cand if max_remove is None or cur - n <= max_remove(cur)]
    if not cand:
      return None
    cur = int(rng.choice(cand))
    targets.append(cur)
  return targets


def method_limit(cfg, method: str) -> Callable[[int], int]:
  """n_in -> the most tokens `method` may remove in one block (`TokenReducer.max_remove`)."""
  # (imports jax)
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  reducer = make_reducer(method)
  return lambda n: int(reducer.max_remove(n, cfg.num_prefix_tokens))


def measure_calibration(cfg, params, *, method: str, batch_size: int, dtype: str,
                        tokens: Sequence[int], schedules: Sequence[Sequence[int]], timing_cfg,
                        threads: int = 1, seed: int = 0) -> records.Profile:
  """Compiles and times, in ONE shuffled measurement (`vitprune.profile.timing`), the uniform
  curve at `tokens` ('model' points, tokens dropped after the embedding by the 'random' reducer
  unless `method` can drop there) and the calibration `schedules` of `method` ('schedule'
  points) -> an analysed Profile (modes model + schedule)."""
  # pylint: disable=g-import-not-at-top  (jax: only when measuring)
  import jax.numpy as jnp
  from vitprune.profile import runner, timing
  from vitprune.reduce.methods import make_reducer
  from vitprune.schedule import Schedule, check_schedule, embed_schedule
  reducer = make_reducer(method)
  curve_name = method if reducer.supports_embedding else "random"
  curve_reducer = make_reducer(curve_name)
  rng = np.random.default_rng(seed)
  images = timing.device_put(jnp.asarray(
      rng.normal(0, 1, (batch_size, cfg.img_size, cfg.img_size, cfg.in_chans)), jnp.float32))
  params = timing.device_put(params)
  jobs = {}
  for n in sorted(set(int(t) for t in tokens), reverse=True):
    jobs[("model", n, None)] = (runner.model_fn(cfg, embed_schedule(cfg, n), curve_reducer, dtype),
                                (params, images))
  for s in schedules:
    sch = check_schedule(cfg, Schedule(tuple(int(c) for c in s)), reducer)
    jobs[("schedule", sch.counts[0], sch.counts)] = (runner.model_fn(cfg, sch, reducer, dtype),
                                                     (params, images))
  compiled = timing.compile_many(jobs, threads=threads)
  meas = timing.measure_all({k: (compiled[k][0], jobs[k][1]) for k in jobs}, timing_cfg,
                            compile_s={k: compiled[k][1] for k in jobs})
  points = tuple(records.Point.from_measurement(m, component=k[0], batch_size=batch_size,
                                                tokens=k[1], schedule=k[2])
                 for k, m in meas.items())
  names = sorted({curve_name, method})
  prof = records.Profile(model=cfg.name, config=dataclasses.asdict(cfg), dtype=dtype,
                         modes=("model", "schedule"), reducer="+".join(names),
                         timing=dataclasses.asdict(timing_cfg), points=points,
                         created=records.now_iso(), **runner.device_info())
  return records.analyze(prof)


def schedule_method(profile: records.Profile) -> str:
  """The method whose graphs a profile's 'schedule' points timed: `measure_calibration` names
  the uniform curve's reducer ('random' unless the method drops after the embedding) and the
  method, joined by '+' ('pomt+random': POMT schedules); one name timed both."""
  names = profile.reducer.split("+")
  return names[0] if len(names) == 1 else "+".join(n for n in names if n != "random")


def calibration_method(profile: records.Profile) -> Optional[str]:
  """The method whose pruned graphs a calibrated profile timed (`schedule_method`): one holding
  the uniform curve ('model' points) and calibration schedules ('schedule' points), as the main
  job's `--solver=multi` profile does; None for any other (a token-count curve or a per-block
  table, which `--mode=schedule` profiles hold too, stands in for every method)."""
  comps = {p.component for p in profile.points}
  return schedule_method(profile) if {"model", "schedule"} <= comps else None


def check_calibration_count(num: int, name: str = "num_schedules") -> None:
  """CalibrationError (a ValueError naming `name`) unless `num` calibration schedules can fit
  the model (at least one per reduction term) and be timed (MAX_CALIBRATION_SCHEDULES)."""
  if num < MIN_CALIBRATION_SCHEDULES:
    raise CalibrationError(f"{name} must be >= {MIN_CALIBRATION_SCHEDULES} (one per reduction "
                           f"term of the latency model), got {num}")
  if num > MAX_CALIBRATION_SCHEDULES:
    raise CalibrationError(f"{name} must be <= {MAX_CALIBRATION_SCHEDULES} (each is a graph "
                           f"compiled and timed), got {num}")


def calibrate(cfg, params, *, method: str, batch_size: int, dtype: str, tokens: Sequence[int],
              timing_cfg, num_schedules: int = DEFAULT_CALIBRATION_SCHEDULES,
              threads: int = 1, seed: int = 0,
              max_residual: float = DEFAULT_MAX_RESIDUAL
              ) -> Tuple[LatencyModel, records.Profile]:
  """Draws `num_schedules` spread calibration schedules of `method` on `tokens`, measures them
  with the uniform curve (`measure_calibration`) and fits -> (LatencyModel, the Profile)."""
  check_calibration_count(num_schedules)
  grid = sorted(set(int(t) for t in tokens) | {cfg.num_tokens})
  scheds = calibration_schedules(cfg, grid, num_schedules, method=method, seed=seed)
  prof = measure_calibration(cfg, params, method=method, batch_size=batch_size, dtype=dtype,
                             tokens=grid, schedules=scheds, timing_cfg=timing_cfg,
                             threads=threads, seed=seed)
  return fit(prof, batch_size=batch_size, method=method, max_residual=max_residual), prof


def calibration_schedules(cfg, grid: Sequence[int], num: int, *, method: str,
                          seed: int, at_most: bool = False) -> List[Counts]:
  """The `num` calibration schedules `calibrate` draws for `method` on `grid` (which holds the
  full count), final counts spread over the grid (`at_most`: fewer where no more are found)."""
  return sample_schedules(cfg.num_tokens, cfg.depth, grid, num, seed=seed,
                          max_remove=method_limit(cfg, method), at_most=at_most)


def fit_on(profile: records.Profile, schedules: Sequence[Sequence[int]], *, batch_size: int,
           method: str) -> LatencyModel:
  """`fit` on the uniform curve of `profile` and only its calibration points whose schedule is
  in `schedules` (one measurement holding calibration and held-out graphs: fit on one part,
  score on the other)."""
  keep = {tuple(int(c) for c in s) for s in schedules}
  part = dataclasses.replace(profile, points=tuple(
      p for p in profile.points if p.component != "schedule" or p.schedule in keep))
  return fit(part, batch_size=batch_size, method=method)


def heldout_schedules(cfg, grid: Sequence[int], num: int, *, method: str,
                      exclude: Sequence[Sequence[int]], seed: int) -> List[Counts]:
  """`num` random schedules of `method` on `grid` for scoring the model, none in `exclude`
  (the calibration), final counts drawn uniformly (not spread)."""
  return sample_schedules(cfg.num_tokens, cfg.depth, grid, num, seed=seed,
                          max_remove=method_limit(cfg, method), exclude=exclude, spread=False)


def measure_with_full(cfg, params, *, method: str, batch_size: int,
                      schedules: Sequence[Sequence[int]], timing_cfg, threads: int = 1,
                      seed: int = 0, dtype: str = "float32") -> Tuple[List[float], float]:
  """Median seconds of each of `schedules` (whole compiled graphs of `method`) and of the full
  (unpruned) graph, timed in one shuffled measurement (`measure_calibration`) -> (schedules'
  medians, full graph's median)."""
  prof = measure_calibration(cfg, params, method=method, batch_size=batch_size, dtype=dtype,
                             tokens=[cfg.num_tokens], schedules=schedules,
                             timing_cfg=timing_cfg, threads=threads, seed=seed)
  got = {p.schedule: p.median_s for p in prof.curve("schedule", batch_size)}
  full = next(p.median_s for p in prof.curve("model", batch_size) if p.tokens == cfg.num_tokens)
  return [got[tuple(int(c) for c in s)] for s in schedules], full


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> Dict[str, float]:
  """{'median', 'p90', 'within10'} of |predicted - measured| / measured."""
  p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
  e = np.abs(p - m) / m
  return {"median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
          "within10": float(np.mean(e <= 0.10)), "count": int(e.size)}
