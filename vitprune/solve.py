"""Schedule solvers: pick token counts from a latency profile and an accuracy estimate.

Pure math over numpy arrays (no file formats; `vitprune.solve_stage` feeds it Profile and
Estimate records). Its two errors: `InfeasibleError` (no plan meets a floor or budget) and
`SolveInputError` (inputs that cannot be solved: raised by the solve stage and the measured
choice, `vitprune.solve_loop`, about the records and the evaluator).
Every grid `ns` is a 1-D array of distinct token counts (prefix tokens included), sorted ascending
here; all per-count arrays are aligned with it.

Paper mode (`solve_paper`, "Pruning One More Token is Enough", WACV 2025)
-------------------------------------------------------------------------
Given the whole-model latency curve L(n) and the accuracy estimate A(n) on a common grid,

  U(n) = alpha * (1 - L(n) / max L) + (1 - alpha) * A(n) / max A,        max over the grid,

n* = argmax U (ties: the smaller latency, then the larger n), and the schedule keeps all tokens
until block `layer` (default 3) reduces to exactly n*:
counts = [N] * (layer + 1) + [n*] * (depth - layer).

Multi-layer mode (`pareto_frontier`, `solve_multilayer`)
--------------------------------------------------------
A schedule is `counts` of length depth + 1 with counts[0] = N (all tokens enter block 0),
non-increasing, every count on the grid. Its predicted latency is the profiler's additive model
(`vitprune.profile.predict`):

  lat(counts) = embed + sum_l [B(counts[l]) + (counts[l+1] < counts[l]) * R(counts[l])]
                + head(counts[depth])

with B the single-block table, R the extra cost of a reducing block (0 when not profiled) and head
the final norm/pool/classifier. Its predicted accuracy comes from the per-layer sensitivity
S[l, n] (accuracy when only block l reduces, from all N tokens to n): with the single-layer drop
D[l, n] = A_full - S[l, n] (D[l, N] = 0),

  'incremental' (default): drop(counts) = sum_l D[l, counts[l+1]] - D[l, counts[l]]
  'additive':              drop(counts) = sum_{l reduces} D[l, counts[l+1]]

and acc(counts) = A_full - drop(counts). The incremental model charges each removed token at the
layer that removes it: block l taking the schedule from counts[l] to counts[l+1] costs the part of
layer l's single-layer curve between those counts. It reproduces every measured single-layer point
exactly (one reduction from N to n at layer l predicts S[l, n]; with the monotone envelope below,
where S[l, n] is at most the unpruned accuracy and no larger count's) and, unlike 'additive',
does not charge the tokens already removed by earlier layers a second time (with 'additive',
N -> 100 at block 3 then 100 -> 99 at block 4 costs about twice N -> 100 alone). With
`monotone=True` (the default) D is first replaced by its pessimistic monotone envelope along the
counts, D[l, n] <- max(0, max_{m >= n} D[l, m]), so measurement noise can never make removing
tokens look beneficial (every increment is >= 0); `monotone=False` uses the raw table.
Neither model sees interactions: a cut the table calls free (a late block down to a few tokens)
can cost points after an early reduction (block 0), and the DP seeks such cuts, so the default
incremental frontier is optimistic (vit_digits POMT: +4.7 points on average;
`benchmarks/accuracy_combination.py`). A floor is therefore checked on measurements
(`vitprune.solve_loop.check_floor`), and `refine_frontier` corrects the model where the DP goes:
it measures the frontier, fits a drop correction delta[l, n] (>= 0, non-increasing in n, 0 at N;
`fit_drop_correction`, anchored on the single reductions the table measured) to the measured
multi-layer schedules, re-solves with D + delta (still a drop table, so the DP stays exact) and
measures what is new, until a frontier brings nothing new.

Both objectives are sums of per-block terms that depend only on (layer, tokens in, tokens out), so
a dynamic programme over layers with the token count as state is exact. Because two objectives
are traded off, each (layer, count) state keeps its full Pareto set of (latency, drop) labels
(dominance at the same state is safe: the future costs depend only on the state). The final
Pareto set over all end states is the exact frontier: for every accuracy floor the
minimum-latency feasible schedule, and for every latency budget the maximum-accuracy one, lie on
it. A reducing block's costs split into a source part (latency B(n_in) + R(n_in), drop
-D[l, n_in] or 0) and a target part (drop D[l, n_out]), so the candidates of target n_out are a
suffix Pareto set over all larger sources, shifted: O(K * F log F) per layer for K counts and F
labels per state (depth 40, 200 counts: about 2 s on one CPU core). Exactly equal (latency, drop)
labels keep the schedule with more tokens in total (the later reduction).

Step bottoms: a grid count n is at a step bottom when B(n) is lower than B(n') at the next larger
grid count n' by more than the noise of that pair; `step_bottoms_only=True` restricts the
per-layer choices to step bottoms plus the full count N.

Per-block removal limits: a method may cap how many tokens one block removes (ToMe merges at most
half of the non-prefix tokens, `TokenReducer.max_remove`). `max_remove` [K] gives that cap for
each source count; block l may then go from n_in to n_out only when
n_in - n_out <= max_remove(n_in). The sources allowed for a target n_out are then a window of
the grid, not a suffix; the DP answers each window from a sparse table of Pareto sets (union of
two overlapping power-of-two ranges; taking the Pareto set of a union is associative and
idempotent), so it stays exact.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from vitprune.config import check_switch, real_number
from vitprune.console import counted, shown_apart
from vitprune.schedule import as_int, layer_counts

ACCURACY_MODELS = ("incremental", "additive")
ArrayLike = Union[np.ndarray, Sequence[float]]


# ----------------------------------------------------------------------------------------------
# Validation helpers.

def _finite(name: str, a: ArrayLike, ndim: int, length: Optional[int] = None) -> np.ndarray:
  """`a` as float64 with `ndim` dims (last of size `length`), all finite; else ValueError."""
  arr = np.asarray(a, dtype=np.float64)
  if arr.ndim != ndim:
    raise ValueError(f"{name} must have {counted(ndim, 'dimension')}, got shape {arr.shape}")
  if length is not None and arr.shape[-1] != length:
    raise ValueError(f"{name} has {arr.shape[-1]} entries along the token axis, the grid has "
                     f"{length}")
  bad = ~np.isfinite(arr)
  if bad.any():
    where = np.argwhere(bad)[:5].tolist()
    raise ValueError(f"{name} contains {counted(int(bad.sum()), 'NaN/inf value')} (first indices "
                     f"{where}); drop or re-measure those points")
  return arr


def _grid(ns: ArrayLike, num_tokens: Optional[int] = None) -> np.ndarray:
  """Validated token grid as int64 [K] (any order in, same order out)."""
  raw = np.asarray(ns)
  if raw.ndim != 1:
    raise ValueError(f"token grid must be 1-D, got shape {raw.shape}")
  if raw.size == 0:
    raise ValueError("token grid is empty: no token count to choose from")
  f = np.asarray(raw, dtype=np.float64)
  if not np.all(np.isfinite(f)) or np.any(f != np.round(f)):
    raise ValueError(f"token counts must be finite integers, got {raw.tolist()}")
  g = f.astype(np.int64)
  if len(np.unique(g)) != g.size:
    raise ValueError(f"token counts must be distinct, got {g.tolist()}")
  if np.any(g < 1):
    raise ValueError(f"token counts must be >= 1, got {g.tolist()}")
  if num_tokens is not None and np.any(g > num_tokens):
    raise ValueError(f"token counts {g[g > num_tokens].tolist()} exceed the model's "
                     f"{num_tokens} tokens")
  return g


def _unit(name: str, a: np.ndarray) -> np.ndarray:
  """`a` unchanged when every value is an accuracy or agreement in [0, 1]; else ValueError."""
  if np.any((a < 0) | (a > 1)):
    raise ValueError(f"{name} must be in [0, 1] (an accuracy or agreement), got values from "
                     f"{float(np.min(a))} to {float(np.max(a))}")
  return a


def check_alpha(alpha: float) -> float:
  """`alpha` as a float in [0, 1]: TypeError for a bool or a non-number, ValueError else."""
  value = real_number(alpha)
  if value is None:
    raise TypeError(f"alpha must be a number in [0, 1], got {alpha!r}")
  if not 0.0 <= value <= 1.0:  # also rejects NaN
    raise ValueError(f"alpha must be in [0, 1], got {value}")
  return value


def _check_depth_layer(depth: int, layer: int) -> Tuple[int, int]:
  """(depth, layer) as ints (2.9 or True is refused, never truncated), layer in 0..depth-1."""
  depth, layer = as_int(depth, "depth"), as_int(layer, "reduction layer")
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth}")
  if not 0 <= layer < depth:
    raise ValueError(f"reduction layer {layer} is outside blocks 0..{depth - 1}")
  return depth, layer


# ----------------------------------------------------------------------------------------------
# Paper mode.

def intersect_grid(latency_ns: ArrayLike, latency: ArrayLike, accuracy_ns: ArrayLike,
                   accuracy: ArrayLike) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Aligns L on its grid [P] and A on its grid [Q] on their common counts.

  Returns (ns [K] ascending int64, latency [K], accuracy [K]); ValueError when they share no count.
  """
  ln, an = _grid(latency_ns), _grid(accuracy_ns)
  lat = _finite("latency", latency, 1, ln.size)
  acc = _finite("accuracy", accuracy, 1, an.size)
  common = np.intersect1d(ln, an)
  if common.size == 0:
    raise ValueError(f"the latency grid ({ln.min()}..{ln.max()}, {ln.size} counts) and the "
                     f"accuracy grid ({an.min()}..{an.max()}, {an.size} counts) share no token "
                     f"count")
  li = {int(n): i for i, n in enumerate(ln)}
  ai = {int(n): i for i, n in enumerate(an)}
  return (common, lat[[li[int(n)] for n in common]], acc[[ai[int(n)] for n in common]])


def utility(latency: ArrayLike, accuracy: ArrayLike, alpha: float = 0.5) -> np.ndarray:
  """U = alpha (1 - L / max L) + (1 - alpha) A / max A, elementwise over [K]."""
  alpha = check_alpha(alpha)
  lat = _finite("latency", latency, 1)
  acc = _finite("accuracy", accuracy, 1, lat.size)
  if lat.size == 0:
    raise ValueError("token grid is empty: no token count to choose from")
  if np.any(lat <= 0):
    raise ValueError(f"latencies must be > 0 seconds, got min {lat.min()}")
  if np.any(acc < 0):
    raise ValueError(f"accuracies must be >= 0, got min {acc.min()}")
  max_acc = acc.max()
  if max_acc <= 0 and alpha < 1:
    raise ValueError("all accuracies are 0: A / max A is undefined (use alpha=1 to rank by "
                     "latency alone)")
  acc_term = acc / max_acc if max_acc > 0 else np.zeros_like(acc)
  return alpha * (1.0 - lat / lat.max()) + (1.0 - alpha) * acc_term


def pomt_counts(num_tokens: int, n: int, depth: int, layer: int = 3) -> Tuple[int, ...]:
  """All tokens until block `layer` reduces to `n` (`vitprune.schedule.layer_counts`), checked
  against plain numbers (no model config here)."""
  depth, layer = _check_depth_layer(depth, layer)
  n, num_tokens = as_int(n, "token count"), as_int(num_tokens, "num_tokens")
  if not 1 <= n <= num_tokens:
    raise ValueError(f"token count {n} is outside 1..{num_tokens}")
  return layer_counts(num_tokens, n, depth, layer)


@dataclasses.dataclass(frozen=True, eq=False)
class PaperSolution:
  """Paper-mode result. ns/latency/accuracy/utility: [K] on the common grid, ns ascending."""
  ns: np.ndarray
  latency: np.ndarray
  accuracy: np.ndarray
  utility: np.ndarray
  alpha: float
  index: int              # argmax position in ns
  layer: int
  counts: Tuple[int, ...]  # the POMT schedule, len depth + 1

  @property
  def n_star(self) -> int:
    return int(self.ns[self.index])

  @property
  def latency_star(self) -> float:
    return float(self.latency[self.index])

  @property
  def accuracy_star(self) -> float:
    return float(self.accuracy[self.index])

  @property
  def utility_star(self) -> float:
    return float(self.utility[self.index])


def utility_argmax(ns: np.ndarray, latency: np.ndarray, u: np.ndarray,
                   tie_tol: float = 1e-12) -> int:
  """The index of the paper's choice among [K] counts `ns` with latencies and utilities `u`:
  utilities within `tie_tol` of the maximum tie, ties go to the smaller latency, then the
  larger n (`solve_paper`; a solution's reader checks its choice by it)."""
  ns, latency, u = (np.asarray(a) for a in (ns, latency, u))
  best = np.flatnonzero(u >= u.max() - tie_tol)
  # lexsort: last key is primary -> smallest latency, then largest n.
  return int(best[np.lexsort((-ns[best], latency[best]))[0]])


def solve_paper(ns: ArrayLike, latency: ArrayLike, accuracy: ArrayLike, alpha: float = 0.5, *,
                depth: int, num_tokens: int, layer: int = 3,
                tie_tol: float = 1e-12) -> PaperSolution:
  """The paper's utility argmax over a common grid.

  ns: [K] token counts; latency: [K] whole-model seconds L(n); accuracy: [K] A(n) (accuracy or
  fidelity, higher is better). Utilities within `tie_tol` of the maximum tie; ties go to the
  smaller latency, then the larger n.
  """
  alpha = check_alpha(alpha)
  depth, layer = _check_depth_layer(depth, layer)
  if isinstance(tie_tol, bool) or not isinstance(tie_tol, (int, float, np.integer, np.floating)) \
      or not (np.isfinite(tie_tol) and tie_tol >= 0):     # (NaN: an IndexError, nothing tied)
    raise ValueError(f"tie_tol must be a finite number >= 0, got {tie_tol!r}")
  g = _grid(ns, as_int(num_tokens, "num_tokens"))
  lat = _finite("latency", latency, 1, g.size)
  acc = _unit("accuracy", _finite("accuracy", accuracy, 1, g.size))
  order = np.argsort(g)
  g, lat, acc = g[order], lat[order], acc[order]
  u = utility(lat, acc, alpha)
  index = utility_argmax(g, lat, u, tie_tol)
  counts = pomt_counts(num_tokens, int(g[index]), depth, layer)
  return PaperSolution(ns=g, latency=lat, accuracy=acc, utility=u, alpha=alpha, index=index,
                       layer=layer, counts=counts)


# ----------------------------------------------------------------------------------------------
# Multi-layer mode: cost model.

def step_bottoms(ns: ArrayLike, latency: ArrayLike,
                 pair_noise: Optional[ArrayLike] = None) -> np.ndarray:
  """Bool [K]: count ns[i] is a step bottom (or the largest count).

  ns: [K] ascending; latency: [K] block latency B(n); pair_noise: [K - 1] noise threshold of each
  adjacent pair (ns[i], ns[i+1]) in seconds (default 0). ns[i] is a step bottom when
  latency[i + 1] - latency[i] > pair_noise[i].
  """
  g = _grid(ns)
  if np.any(np.diff(g) <= 0):
    raise ValueError("step_bottoms needs the grid sorted ascending")
  lat = _finite("block latency", latency, 1, g.size)
  noise = (np.zeros(g.size - 1) if pair_noise is None
           else _finite("pair_noise", pair_noise, 1, g.size - 1))
  if np.any(noise < 0):
    raise ValueError("pair_noise must be >= 0")
  mask = np.zeros(g.size, bool)
  mask[:-1] = (lat[1:] - lat[:-1]) > noise
  mask[-1] = True
  return mask


@dataclasses.dataclass(frozen=True, eq=False)
class CostModel:
  """Validated multi-layer cost tables on one grid (ascending, ns[-1] == num_tokens).

  ns: [K]; block: [K] B(n); reduce: [K] R(n_in); head: [K] head(n_final); embed: scalar;
  drop: [depth, K] per-layer single-reduction drop D[l, n] (D[l, N] = 0, layers that may not
  reduce are marked in `can_reduce` [depth]); full_accuracy: A_full; min_keep: [K] the fewest
  tokens one block may leave from ns[i] (ns[i] - max_remove(ns[i]); 0: no limit).
  """
  ns: np.ndarray
  block: np.ndarray
  reduce: np.ndarray
  head: np.ndarray
  embed: float
  drop: np.ndarray
  can_reduce: np.ndarray
  full_accuracy: float
  accuracy_model: str
  min_keep: Optional[np.ndarray] = None

  @property
  def depth(self) -> int:
    return int(self.drop.shape[0])

  @property
  def num_tokens(self) -> int:
    return int(self.ns[-1])


def drop_envelope(drop: ArrayLike) -> np.ndarray:
  """Pessimistic envelope of accuracy drops [..., K] on counts ascending along the last axis:
  the drop at n becomes max(0, every drop measured at n or a larger count)."""
  d = np.asarray(drop, np.float64)
  return np.maximum(np.maximum.accumulate(d[..., ::-1], axis=-1)[..., ::-1], 0.0)


def make_cost_model(ns: ArrayLike, block_latency: ArrayLike, sensitivity: ArrayLike,
                    full_accuracy: float, *, depth: int, num_tokens: int,
                    layers: Optional[Sequence[int]] = None, embed_latency: float = 0.0,
                    head_latency: Union[float, ArrayLike] = 0.0,
                    reduce_latency: Optional[ArrayLike] = None,
                    accuracy_model: str = "incremental", monotone: bool = True,
                    max_remove: Optional[ArrayLike] = None) -> CostModel:
  """Builds the `CostModel` from arrays aligned with the grid `ns` [K].

  block_latency, reduce_latency: [K]; head_latency: scalar or [K]; sensitivity: [len(layers), K]
  accuracy S[l, n] when only block layers[r] reduces from all tokens to n (default
  layers = 0..depth-1; blocks not listed never reduce). The grid must contain num_tokens.
  max_remove: [K] the most tokens one block may remove from ns[i] (None: no limit).
  """
  check_switch("monotone", monotone)
  if accuracy_model not in ACCURACY_MODELS:
    raise ValueError(f"unknown accuracy_model {accuracy_model!r}; use one of {ACCURACY_MODELS}")
  depth, num_tokens = as_int(depth, "depth"), as_int(num_tokens, "num_tokens")
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth}")
  g = _grid(ns, num_tokens)
  if num_tokens not in set(g.tolist()):
    raise ValueError(f"the grid must contain the full token count {num_tokens} (block 0 always "
                     f"sees all tokens); grid is {g.min()}..{g.max()}")
  k = g.size
  block = _finite("block latency", block_latency, 1, k)
  red = np.zeros(k) if reduce_latency is None else _finite("reduce latency", reduce_latency, 1, k)
  head = np.asarray(head_latency, np.float64)
  head = (np.full(k, float(_finite("head latency", head, 0))) if head.ndim == 0
          else _finite("head latency", head, 1, k))
  embed = float(_finite("embed latency", embed_latency, 0))
  for name, a in (("block latency", block), ("reduce latency", red), ("head latency", head)):
    if np.any(a < 0):
      raise ValueError(f"{name} must be >= 0 seconds, got min {a.min()}")
  cheapest = embed + block[g == num_tokens][0] + (depth - 1) * block.min() + head.min()
  if cheapest < -1e-9 * (abs(embed) + depth * block.max() + head.max()):
    raise ValueError(f"embed latency {embed} s makes the cheapest schedule take negative time "
                     f"(a lower bound of {cheapest} s): embed + block 0 at all tokens + the "
                     "other blocks and the head at their cheapest must be >= 0")
  a_full = float(_unit("full accuracy", _finite("full accuracy", full_accuracy, 0)))
  layers = (tuple(range(depth)) if layers is None else
            tuple(as_int(l, "sensitivity layer") for l in layers))
  if len(set(layers)) != len(layers):
    raise ValueError(f"sensitivity layers must be distinct, got {layers}")
  for l in layers:
    if not 0 <= l < depth:
      raise ValueError(f"sensitivity layer {l} is outside blocks 0..{depth - 1}")
  sens = np.asarray(sensitivity, np.float64)
  if sens.ndim != 2 or sens.shape[0] != len(layers):
    raise ValueError(f"sensitivity must have shape [len(layers)={len(layers)}, K={k}], got "
                     f"{sens.shape}")
  sens = _unit("sensitivity", _finite("sensitivity", sens, 2, k))
  min_keep = None
  if max_remove is not None:
    cap = _finite("max_remove", max_remove, 1, k)
    if np.any(cap < 0) or np.any(cap != np.round(cap)):
      raise ValueError(f"max_remove must be integers >= 0, got {cap.tolist()}")
    min_keep = (g - cap.astype(np.int64))
  order = np.argsort(g)
  g, block, red, head, sens = g[order], block[order], red[order], head[order], sens[:, order]
  if min_keep is not None:
    min_keep = min_keep[order]
  d_rows = a_full - sens
  d_rows[:, -1] = 0.0                      # reducing to N tokens is no reduction
  if monotone:
    d_rows = drop_envelope(d_rows)
  drop = np.zeros((depth, k))
  can_reduce = np.zeros(depth, bool)
  drop[list(layers)] = d_rows
  can_reduce[list(layers)] = True
  return CostModel(ns=g, block=block, reduce=red, head=head, embed=embed, drop=drop,
                   can_reduce=can_reduce, full_accuracy=a_full, accuracy_model=accuracy_model,
                   min_keep=min_keep)


def _check_counts(model: CostModel, counts: Sequence[int]) -> np.ndarray:
  """Grid indices [depth + 1] of a schedule, validated against `model`."""
  c = [as_int(v, "schedule count") for v in counts]
  if len(c) != model.depth + 1:
    raise ValueError(f"schedule has {len(c)} counts, depth {model.depth} needs {model.depth + 1}")
  pos = {int(n): i for i, n in enumerate(model.ns)}
  missing = sorted({v for v in c if v not in pos})
  if missing:
    raise ValueError(f"schedule counts {missing} are not on the grid")
  if c[0] != model.num_tokens:
    raise ValueError(f"schedule must start with all {model.num_tokens} tokens, got {c[0]}")
  for l in range(model.depth):
    if c[l + 1] > c[l]:
      raise ValueError(f"schedule counts must never increase: block {l} {c[l]} -> {c[l + 1]}")
    if c[l + 1] < c[l] and not model.can_reduce[l]:
      raise ValueError(f"block {l} reduces but has no sensitivity estimate")
    if model.min_keep is not None and c[l + 1] < model.min_keep[pos[c[l]]]:
      raise ValueError(f"block {l} removes {c[l] - c[l + 1]} tokens from {c[l]}; the method "
                       f"removes at most {c[l] - int(model.min_keep[pos[c[l]]])} in one block")
  return np.asarray([pos[v] for v in c])


def _block_costs(model: CostModel, layer: int, src: np.ndarray, dst: np.ndarray):
  """Latency and drop [M] of block `layer` taking grid index src -> dst (dst <= src)."""
  reduces = dst < src
  lat = model.block[src] + np.where(reduces, model.reduce[src], 0.0)
  d = model.drop[layer]
  if model.accuracy_model == "incremental":
    drop = np.where(reduces, d[dst] - d[src], 0.0)
  else:
    drop = np.where(reduces, d[dst], 0.0)
  return lat, drop


def schedule_latencies(model: CostModel, idx: np.ndarray) -> np.ndarray:
  """[S] predicted latencies of S schedules given as grid indices [S, depth + 1] (not checked:
  for many schedules at once, e.g. every one on the grid)."""
  idx = np.asarray(idx, np.int64)
  lat = model.embed + model.head[idx[:, -1]]
  for l in range(model.depth):
    lat = lat + _block_costs(model, l, idx[:, l], idx[:, l + 1])[0]
  return lat


def predict_schedule(model: CostModel, counts: Sequence[int]) -> Tuple[float, float]:
  """(predicted latency seconds, predicted accuracy) of one schedule under `model`."""
  idx = _check_counts(model, counts)
  lat, drop = model.embed, 0.0
  for l in range(model.depth):
    bl, bd = _block_costs(model, l, idx[l:l + 1], idx[l + 1:l + 2])
    lat += float(bl[0])
    drop += float(bd[0])
  lat += float(model.head[idx[-1]])
  return lat, model.full_accuracy - drop


# ----------------------------------------------------------------------------------------------
# Per-image combination (diagnostic models: not decomposable per block, so not used by the DP;
# `anchored_accuracy` predicts what the refinement measures next from what it measured before).

@dataclasses.dataclass(frozen=True)
class MarginTable:
  """Per-example top-1 margins of the single-layer sensitivity points.

  ns: int64 [K] ascending token grid, ns[-1] = N (all tokens).
  reference: float64 [M] margins of the unpruned model on M examples.
  margins: float64 [depth, K, M]: block l reducing from N to ns[k] alone (margins[:, -1] =
    reference).
  """
  ns: np.ndarray
  reference: np.ndarray
  margins: np.ndarray

  @classmethod
  def build(cls, ns: ArrayLike, reference: ArrayLike, single: ArrayLike) -> "MarginTable":
    """`single` [depth, K - 1, M]: the margins for every grid count below N = ns[-1]."""
    grid = _grid(ns)
    if np.any(np.diff(grid) <= 0):
      raise ValueError(f"token grid must be ascending, got {grid.tolist()}")
    ref = _finite("reference margins", reference, 1)
    if ref.size == 0:                  # (every predicted accuracy was 0/0 = NaN)
      raise ValueError("reference margins are empty: the table needs at least one example")
    single = _finite("single-layer margins", single, 3)
    if single.shape[2] != ref.size:
      raise ValueError(f"single-layer margins cover {single.shape[2]} examples, the reference "
                       f"{ref.size}")
    if single.shape[1] != grid.size - 1:
      raise ValueError(f"single-layer margins have {single.shape[1]} counts, the grid has "
                       f"{grid.size - 1} below {grid[-1]}")
    full = np.broadcast_to(ref, (single.shape[0], 1, ref.size))
    return cls(grid, ref, np.concatenate([single, full], axis=1))


def _margin_columns(table: MarginTable, counts_list: Sequence[Sequence[int]]) -> np.ndarray:
  """Grid indices [S, depth + 1] of S schedules on `table`'s grid, validated."""
  idx = {int(n): k for k, n in enumerate(table.ns)}
  depth, n_full = table.margins.shape[0], int(table.ns[-1])
  rows = []
  for counts in counts_list:
    counts = [as_int(c, "schedule count") for c in counts]
    if len(counts) != depth + 1:
      raise ValueError(f"schedules need {depth + 1} counts each, got {counts}")
    if counts[0] != n_full or any(b > a for a, b in zip(counts, counts[1:])):
      raise ValueError(f"counts {counts} must start at all {n_full} tokens and never increase")
    missing = [c for c in counts if c not in idx]
    if missing:
      raise ValueError(f"token count {missing[0]} is not on the margin table's grid "
                       f"{table.ns.tolist()}")
    rows.append([idx[c] for c in counts])
  return np.array(rows, np.int64).reshape(-1, depth + 1)


def _margin_steps(table: MarginTable, cols: np.ndarray) -> np.ndarray:
  """[S, depth, M] each block's incremental single-layer margin change for schedules `cols`
  [S, depth + 1]: m[l, counts[l+1]] - m[l, counts[l]] (0 where block l keeps its tokens)."""
  depth = table.margins.shape[0]
  return np.stack([table.margins[l, cols[:, l + 1]] - table.margins[l, cols[:, l]]
                   for l in range(depth)], axis=1)


def _margin_step_sum(table: MarginTable, cols: np.ndarray) -> np.ndarray:
  """[S, M] `_margin_steps` summed over the blocks, one block at a time ([S, M] memory)."""
  total = np.zeros((len(cols), table.reference.size))
  for l in range(table.margins.shape[0]):
    total += table.margins[l, cols[:, l + 1]] - table.margins[l, cols[:, l]]
  return total


def per_image_margins(table: MarginTable, counts_list: Sequence[Sequence[int]]) -> np.ndarray:
  """[S, M] each example's margin under `per_image_accuracy`'s model for S schedules."""
  return table.reference[None] + _margin_step_sum(table, _margin_columns(table, counts_list))


def per_image_accuracy(table: MarginTable, counts_list: Sequence[Sequence[int]], *,
                       chunk: int = 4096) -> np.ndarray:
  """[S] predicted accuracies of S schedules: each example's margin moves by the incremental
  single-layer changes, margin(counts) = m_ref + sum_l (m[l, counts[l+1]] - m[l, counts[l]]), and
  the example counts as correct when that stays > 0 (the incremental model per example instead
  of per dataset: cuts that each leave an example correct can together flip it). Unlike the
  solver's incremental model, the raw margins are used (no monotone envelope)."""
  counts_list = list(counts_list)
  out = np.empty(len(counts_list))
  for s in range(0, len(counts_list), chunk):      # [chunk, M] at a time: bounded memory
    out[s:s + chunk] = (per_image_margins(table, counts_list[s:s + chunk]) > 0).mean(axis=1)
  return out


def anchored_accuracy(table: MarginTable, anchors: Mapping[Tuple[int, ...], ArrayLike],
                      counts_list: Sequence[Sequence[int]], *, neighbours: int = 3,
                      distance_examples: int = 4096) -> np.ndarray:
  """[S] predicted accuracies of S schedules from the measured schedules nearest to each.

  anchors: {counts: [M] per-example margins measured for that schedule}; the unpruned model
  (`table.reference`) is always one too. `per_image_accuracy` moves every margin from the
  unpruned model's; here they move from an anchor A, by the difference of the single-layer
  steps: margin(S) = m_A + sum_l (step_l(S) - step_l(A)), so an interaction A measured (a late
  cut that costs more after an early one) is kept wherever S shares it. The `neighbours`
  anchors with the smallest distance sum_l mean_i |step_l(S)_i - step_l(A)_i| (over at most
  `distance_examples` evenly spaced examples) each predict an accuracy, and those accuracies
  are averaged with weights 1 / distance (an anchor at distance 0 alone). A measured schedule
  predicts its own measurement; with no anchors this is `per_image_accuracy`. Work: S x anchors
  x depth x min(M, distance_examples) for the distances; memory [anchors, M]."""
  neighbours = as_int(neighbours, "neighbours")
  if neighbours < 1:
    raise ValueError(f"neighbours must be >= 1, got {neighbours}")
  m_ref = table.reference
  depth, k_grid = table.margins.shape[:2]
  a_counts = [tuple(as_int(c, "schedule count") for c in a) for a in anchors]
  a_marg = [_finite(f"margins of anchor {list(c)}", anchors[a], 1)
            for c, a in zip(a_counts, anchors)]
  for c, m in zip(a_counts, a_marg):
    if m.size != m_ref.size:
      raise ValueError(f"anchor {list(c)} has margins for {m.size} examples, the margin table "
                       f"for {m_ref.size}")
  a_cols = np.concatenate([np.full((1, depth + 1), k_grid - 1, np.int64),   # the unpruned model
                           _margin_columns(table, a_counts)])                # [A + 1, depth + 1]
  marg = np.stack([m_ref] + a_marg)                                          # [A + 1, M]
  base = marg - _margin_step_sum(table, a_cols)                    # m_A - sum_l step_l(A)
  sub = np.unique(np.linspace(0, m_ref.size - 1, min(m_ref.size, distance_examples))
                  .round().astype(np.int64))       # the examples distances are measured on
  a_steps = _margin_steps(MarginTable(table.ns, m_ref[sub], table.margins[:, :, sub]),
                          a_cols)                                            # [A + 1, depth, m]
  measured = {c: i + 1 for i, c in enumerate(a_counts)}
  cols = _margin_columns(table, counts_list)
  k = min(neighbours, len(marg))
  out = np.empty(len(cols))
  for i, col in enumerate(cols):
    own = measured.get(tuple(int(n) for n in table.ns[col]))
    if own is not None or (col == k_grid - 1).all():     # measured, or the unpruned model
      out[i] = float((marg[own or 0] > 0).mean())
      continue
    steps = _margin_steps(table, col[None])[0]                               # [depth, M]
    dist = np.abs(a_steps - steps[None][:, :, sub]).mean(axis=2).sum(axis=1)  # [A + 1]
    near = np.argsort(dist, kind="stable")[:k]
    acc = ((base[near] + steps.sum(axis=0)) > 0).mean(axis=1)                # [k]
    d = dist[near]
    out[i] = acc[0] if d[0] == 0 else float(np.average(acc, weights=1.0 / d))
  return out


# ----------------------------------------------------------------------------------------------
# Measured correction of the combined accuracy model.

def is_multi_reduction(counts: Sequence[int]) -> bool:
  """Whether a schedule reduces in more than one block (a single reduction is a point of the
  sensitivity table, which the combination reproduces by construction)."""
  return sum(int(a) > int(b) for a, b in zip(counts, counts[1:])) > 1


def _correction_columns(model: CostModel, counts: Sequence[int]) -> np.ndarray:
  """[depth, K] 0/1: which increments of the drop correction (`fit_drop_correction`) a
  schedule's predicted drop contains under `model.accuracy_model`."""
  idx = _check_counts(model, counts)
  k = model.ns.size
  cols = np.zeros((model.depth, k))
  for l in range(model.depth):
    src, dst = int(idx[l]), int(idx[l + 1])
    if dst < src:      # incremental: delta[dst] - delta[src]; additive: delta[dst]
      cols[l, dst:src if model.accuracy_model == "incremental" else k - 1] = 1.0
  return cols


def _single_reductions(model: CostModel) -> List[Tuple[int, ...]]:
  """Every schedule in which one block reduces, to any grid count it may reach."""
  n_full, out = model.num_tokens, []
  for l in np.flatnonzero(model.can_reduce):
    for n in model.ns[:-1]:
      if model.min_keep is None or n >= model.min_keep[-1]:
        out.append(layer_counts(n_full, int(n), model.depth, int(l)))
  return out


def fit_drop_correction(model: CostModel, measured: Dict[Tuple[int, ...], float], *,
                        anchor_singles: bool = True) -> Tuple[np.ndarray, int]:
  """The per-layer drop table's correction from measured multi-layer schedules.

  The combination misses interactions (a late cut the table calls free costs points after an
  early one) and the DP seeks exactly those cuts. This fits delta [depth, K] with
  delta[l, N] = 0, delta >= 0 and non-increasing in n (removing a token never costs less than
  the table says, and costs more the fewer remain), so that `with_drop_correction(model, delta)`
  predicts the measured drops of `measured` ({counts: metric}; schedules reducing in one block
  or none are skipped) in the least-squares sense (non-negative least squares on the increments
  between grid counts). With `anchor_singles` every single reduction on the grid is a row too,
  at the table's own value (the table measured it): a per-layer table cannot represent an
  interaction exactly, so the fit trades the two off instead of charging single reductions
  whatever the combinations need. The corrected model keeps the DP exact (it is a drop table).
  Returns (delta, number of measured schedules fitted); zeros when none qualifies."""
  from scipy.optimize import nnls  # pylint: disable=g-import-not-at-top  (only when refining)
  if not isinstance(measured, Mapping):      # (a list of pairs: "no attribute 'items'")
    raise TypeError(f"measured must be a dict {{counts: metric}}, got {type(measured).__name__}")
  # (finite: a synthetic table's predictions, what the tests fit, may fall below 0)
  values = check_metrics("measured", list(measured.values()), list(measured), unit=False)
  rows = [(c, v) for c, v in zip(measured, values) if is_multi_reduction(c)]
  delta = np.zeros_like(model.drop)
  if not rows:
    return delta, 0
  anchors = _single_reductions(model) if anchor_singles else []   # residual 0: the table's own
  x = np.stack([_correction_columns(model, c).ravel() for c in [c for c, _ in rows] + anchors])
  y = np.array([predict_schedule(model, c)[1] - v for c, v in rows] + [0.0] * len(anchors))
  inc, _ = nnls(x, y)
  inc = inc.reshape(model.depth, -1)
  delta = np.cumsum(inc[:, ::-1], axis=1)[:, ::-1]          # delta[l, k] = sum_{j >= k} inc
  delta = (delta - delta[:, -1:]) * model.can_reduce[:, None]
  return delta, len(rows)


def check_metrics(what: str, values: Any, counts_list: Sequence[Sequence[int]], *,
                  unit: bool = True) -> List[float]:
  """`values`, one measured accuracy or agreement in [0, 1] (`unit`; else any finite number)
  per schedule of `counts_list`, as floats; ValueError/TypeError naming the first schedule
  otherwise (NaN reached scipy's nnls as "array must not contain infs or NaNs", a percentage
  measured was taken as it, and a scalar was "object of type 'float' has no len()")."""
  if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
    raise TypeError(f"{what} must give one metric per schedule, got {type(values).__name__} "
                    f"{values!r}")
  if len(values) != len(counts_list):
    raise ValueError(f"{what} returned {len(values)} values for {len(counts_list)} schedules")
  out = []
  for counts, v in zip(counts_list, values):
    f = real_number(v)                         # (a Python, numpy or JAX number)
    if f is None or not (0.0 <= f <= 1.0 if unit else np.isfinite(f)):   # (NaN fails both)
      raise ValueError(f"{what}: the metric of schedule {','.join(map(str, counts))} is "
                       f"{v!r}, not " + ("an accuracy or agreement in [0, 1]" if unit else
                                         "a finite number"))
    out.append(f)
  return out


def with_drop_correction(model: CostModel, delta: ArrayLike) -> CostModel:
  """`model` with `delta` [depth, K] (>= 0, from `fit_drop_correction`) added to its drop table."""
  d = _finite("drop correction", delta, 2, model.ns.size)
  if d.shape[0] != model.depth:
    raise ValueError(f"drop correction has {d.shape[0]} layers, the model {model.depth}")
  if np.any(d < 0):
    raise ValueError(f"a drop correction must be >= 0 (pessimistic), got min {d.min()}")
  return dataclasses.replace(model, drop=model.drop + d)


@dataclasses.dataclass(frozen=True, eq=False)
class RefinementRound:
  """One round of `refine_frontier`: the frontier it solved, how many measured schedules its
  correction was fitted on, and the schedules it measured, as predicted BEFORE measuring (by
  the corrected model: `new[i].accuracy`; with a margin table also by `anchored_accuracy` on
  every schedule measured in earlier rounds: `anchored[i]`)."""
  index: int
  frontier_size: int
  fitted_on: int
  new: Tuple["Plan", ...]
  anchored: Optional[Tuple[float, ...]] = None


@dataclasses.dataclass(frozen=True, eq=False)
class Refinement:
  """`refine_frontier`'s result: the last corrected model, its frontier (every schedule
  measured), every measurement ({counts: metric}), the rounds, and with a margin table the
  per-example margins of every schedule it measured ({counts: [M]}, `anchored_accuracy`'s
  anchors)."""
  model: CostModel
  frontier: Tuple["Plan", ...]
  measured: Dict[Tuple[int, ...], float]
  rounds: Tuple[RefinementRound, ...]
  margins: Optional[Dict[Tuple[int, ...], np.ndarray]] = None

  @property
  def converged(self) -> bool:
    """Whether the last corrected frontier brought no schedule that was not measured before."""
    return len(self.rounds) > 1 and not self.rounds[-1].new


def refine_frontier(model: CostModel, measure, *, rounds: int = 4,
                    measured: Optional[Dict[Tuple[int, ...], float]] = None,
                    table: Optional[MarginTable] = None,
                    anchors: Optional[Mapping[Tuple[int, ...], ArrayLike]] = None
                    ) -> Refinement:
  """The frontier of `model`'s accuracy corrected where the DP goes, from measurements.

  `measure`: [counts, ...] -> [metric, ...] (one call per round, only schedules not measured
  yet; `measured` seeds what is known). Round 0 measures `model`'s frontier; each later round
  fits `fit_drop_correction` on everything measured, re-solves and measures what is new. Stops
  when a corrected frontier brings nothing new (converged) or after `rounds` corrections.
  With `table` (the sensitivity points' per-example margins) `measure(counts_list,
  margins=True)` -> (metrics, [S, M] margins) is called instead, and each round's new schedules
  are also predicted by `anchored_accuracy` from everything measured before them: `anchors`
  ({counts: [M] margins}, e.g. of the schedules in `measured`) and the earlier rounds."""
  if rounds < 0:
    raise ValueError(f"refinement rounds must be >= 0, got {rounds}")
  if anchors is not None and table is None:
    raise ValueError("anchors need the margin table of the single reductions (table=)")
  known = dict(measured or {})
  margins: Optional[Dict[Tuple[int, ...], np.ndarray]] = (
      None if table is None else {tuple(c): np.asarray(m, np.float64)
                                  for c, m in (anchors or {}).items()})
  current, history, fitted = model, [], 0
  for r in range(rounds + 1):
    if r:
      delta, fitted = fit_drop_correction(model, known)
      current = with_drop_correction(model, delta)
    plans = pareto_frontier(current)
    new = tuple(p for p in plans if p.counts not in known)
    todo = [p.counts for p in new]
    anchored = None if table is None else ()
    if not new:
      values = []
    elif table is None:
      values = measure(todo)
    else:
      anchored = tuple(anchored_accuracy(table, margins, todo).tolist())
      values, got = measure(todo, margins=True)
      got = np.asarray(got, np.float64)
      if got.shape != (len(new), table.reference.size):
        raise ValueError(f"measure returned margins of shape {got.shape} for {len(new)} "
                         f"schedules on {table.reference.size} examples")
      margins.update(zip(todo, got))
    values = check_metrics("measure", values, todo)
    known.update((p.counts, v) for p, v in zip(new, values))
    history.append(RefinementRound(r, len(plans), fitted, new, anchored))
    if r and not new:          # round 0 measured nothing new: its frontier was known; fit once
      break
  return Refinement(current, plans, known, tuple(history), margins)


# ----------------------------------------------------------------------------------------------
# Multi-layer mode: exact Pareto dynamic programme.

@dataclasses.dataclass(frozen=True)
class Plan:
  """One schedule with its predicted latency (seconds) and accuracy."""
  counts: Tuple[int, ...]
  latency: float
  accuracy: float


def _pareto_keep(lat: np.ndarray, drop: np.ndarray, tok: np.ndarray) -> np.ndarray:
  """Indices [F] of the non-dominated labels among [M], in (latency, drop) order.

  Sorted by latency, then drop, then more tokens first, a label is kept when its drop is strictly
  lower than that of every label before it; exact (latency, drop) duplicates keep the one with
  more tokens.
  """
  order = np.lexsort((-tok, drop, lat))
  d = drop[order]
  prev_min = np.r_[np.inf, np.minimum.accumulate(d)[:-1]]
  return order[d < prev_min]


def nondominated(latency: ArrayLike, accuracy: ArrayLike, tokens: ArrayLike) -> np.ndarray:
  """Indices of the (latency [M], accuracy [M]) points no other point beats in both, latency
  ascending; exact duplicates keep the larger `tokens` [M]."""
  lat = _finite("latency", latency, 1)
  acc = _finite("accuracy", accuracy, 1, lat.size)
  tok = _finite("tokens", tokens, 1, lat.size)
  keep = _pareto_keep(lat, -acc, tok)
  return keep[np.argsort(lat[keep], kind="stable")]


@dataclasses.dataclass(frozen=True, eq=False)
class _Labels:
  """Pareto labels of one DP state: [F] latency, drop, summed tokens, parent (state, label)."""
  lat: np.ndarray
  drop: np.ndarray
  tok: np.ndarray
  p_state: np.ndarray
  p_label: np.ndarray

  def take(self, idx: np.ndarray) -> "_Labels":
    return _Labels(self.lat[idx], self.drop[idx], self.tok[idx], self.p_state[idx],
                   self.p_label[idx])

  @staticmethod
  def concat(parts: Sequence["_Labels"]) -> "_Labels":
    return _Labels(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in dataclasses.fields(_Labels)))

  def pareto(self) -> "_Labels":
    return self.take(_pareto_keep(self.lat, self.drop, self.tok))


def _layer(model: CostModel, layer: int, prev: Sequence[Optional[_Labels]]):
  """One DP step: Pareto labels per state after block `layer` from those before it."""
  k = model.ns.size
  out: list = [None] * k
  for i in range(k):      # not reducing: i -> i
    if prev[i] is not None:
      p = prev[i]
      idx = np.arange(p.lat.size)
      out[i] = _Labels(p.lat + model.block[i], p.drop.copy(), p.tok + model.ns[i],
                       np.full(idx.size, i), idx)
  if not model.can_reduce[layer]:
    return out
  # Reducing i -> j < i: latency block[i] + reduce[i] and drop base[i] + d[j] (incremental:
  # base = -d[i]; additive: base = 0) split into a source part and a target shift d[j], so the
  # candidates of target j are the Pareto set of the allowed sources i > j, shifted. Without a
  # removal limit the allowed sources are all i > j (a suffix, built incrementally); with one,
  # those with min_keep[i] <= ns[j] (`_windows`).
  d = model.drop[layer]
  base = -d if model.accuracy_model == "incremental" else np.zeros(k)
  src: list = [None] * k
  for i in range(k):
    if prev[i] is not None:
      p = prev[i]
      src[i] = _Labels(p.lat + model.block[i] + model.reduce[i], p.drop + base[i], p.tok,
                       np.full(p.lat.size, i), np.arange(p.lat.size))
  windows = _windows(model)
  if windows is None:
    sources = _suffix_pareto(src)
  else:
    table = _SparseTable(src)
    sources = [table.query(lo, hi) if lo <= hi else None for lo, hi in windows]
  for j in range(k):
    s = sources[j]
    if s is None:
      continue
    moved = _Labels(s.lat, s.drop + d[j], s.tok + model.ns[j], s.p_state, s.p_label)
    out[j] = moved if out[j] is None else _Labels.concat([out[j], moved]).pareto()
  return out


def _union(a: Optional[_Labels], b: Optional[_Labels]) -> Optional[_Labels]:
  """Pareto set of the union of two label sets (None: empty)."""
  if a is None:
    return b
  if b is None:
    return a
  return _Labels.concat([a, b]).pareto()


def _suffix_pareto(src: Sequence[Optional[_Labels]]) -> list:
  """[K] Pareto set of src[j + 1:], for every j (None when empty)."""
  k = len(src)
  out: list = [None] * k
  acc: Optional[_Labels] = None
  for j in range(k - 1, -1, -1):
    out[j] = acc
    if src[j] is not None:
      acc = _union(acc, src[j].pareto())
  return out


def _windows(model: CostModel) -> Optional[List[Tuple[int, int]]]:
  """[K] (lo, hi): grid indices of the sources i that may reduce to ns[j] in one block (lo > hi:
  none); None when no limit binds (every i > j may). Needs min_keep non-decreasing in n (true
  of a cap on a share of the tokens), so each window is contiguous."""
  mk = model.min_keep
  if mk is None or np.all(mk <= model.ns[0]):
    return None
  if np.any(np.diff(mk) < 0):
    raise ValueError(f"max_remove must leave a non-decreasing minimum count, got min_keep "
                     f"{mk.tolist()} on grid {model.ns.tolist()}")
  k = model.ns.size
  # hi(j): the last source whose min_keep <= ns[j].
  hi = np.searchsorted(mk, model.ns, side="right") - 1
  return [(j + 1, int(hi[j])) for j in range(k)]


class _SparseTable:
  """Pareto sets of every range src[a : a + 2^t]; any range [lo, hi] is the union of two."""

  def __init__(self, src: Sequence[Optional[_Labels]]):
    level = [None if s is None else s.pareto() for s in src]
    self.levels = [level]
    width = 1
    while 2 * width <= len(src):
      prev = self.levels[-1]
      self.levels.append([_union(prev[a], prev[a + width])
                          for a in range(len(src) - 2 * width + 1)])
      width *= 2

  def query(self, lo: int, hi: int) -> Optional[_Labels]:
    t = (hi - lo + 1).bit_length() - 1
    level = self.levels[t]
    return _union(level[lo], level[hi - (1 << t) + 1])


def pareto_frontier(model: CostModel) -> Tuple[Plan, ...]:
  """Every non-dominated schedule (latency ascending, accuracy strictly ascending).

  Exact for the cost model: for every schedule on the grid some frontier schedule has latency
  and drop both <= its own (up to float rounding of the sums).
  """
  k, depth = model.ns.size, model.depth
  labels: list = [None] * k
  labels[k - 1] = _Labels(np.array([model.embed]), np.zeros(1), np.array([float(model.ns[-1])]),
                          np.array([-1]), np.array([-1]))
  history = [labels]
  for l in range(depth):
    labels = _layer(model, l, labels)
    history.append(labels)
  ends = [(j, labels[j]) for j in range(k) if labels[j] is not None]
  state = np.concatenate([np.full(p.lat.size, j) for j, p in ends])
  index = np.concatenate([np.arange(p.lat.size) for _, p in ends])
  final = _Labels.concat([p for _, p in ends])
  final_lat = final.lat + model.head[state]
  keep = _pareto_keep(final_lat, final.drop, final.tok)
  plans = []
  for f in keep:
    j, s = int(state[f]), int(index[f])
    idx = [j]
    for l in range(depth, 0, -1):
      lab = history[l][j]
      j, s = int(lab.p_state[s]), int(lab.p_label[s])
      idx.append(j)
    counts = tuple(int(model.ns[i]) for i in reversed(idx))
    plans.append(Plan(counts, float(final_lat[f]), float(model.full_accuracy - final.drop[f])))
  return tuple(plans)


# A predicted accuracy is the unpruned one less differences of k/n values: float rounding can put
# one that equals the floor just under it (93/100 predicted as 0.9299999999999999).
FLOOR_SLACK = 1e-9


class InfeasibleError(ValueError):
  """No plan given to `choose` meets its floor or budget."""


class SolveInputError(ValueError):
  """A profile and an estimate (or an evaluator) that cannot be used together, or at all: the
  solve stage's (`vitprune.solve_stage`) and the measured choice's (`vitprune.solve_loop`)."""


def meets_floor(accuracy, floor: float):
  """`accuracy >= floor` up to float rounding (`FLOOR_SLACK`); numpy arrays too."""
  return accuracy >= floor - FLOOR_SLACK


def choose(frontier: Sequence[Plan], *, accuracy_floor: Optional[float] = None,
           latency_budget: Optional[float] = None, alpha: float = 0.5) -> Tuple[Plan, str]:
  """Picks one frontier plan; returns (plan, criterion).

  accuracy_floor: the fastest plan with accuracy >= floor (`meets_floor`; criterion
    'accuracy_floor').
  latency_budget: the most accurate plan with latency <= budget ('latency_budget').
  neither: the paper's utility over the frontier, alpha (1 - L / max L) + (1 - alpha) A / max A,
  ties to the smaller latency ('utility'). Raises ValueError when infeasible, naming the best
  achievable value.
  """
  if not frontier:
    raise ValueError("empty frontier")
  if accuracy_floor is not None and latency_budget is not None:
    raise ValueError("give either an accuracy floor or a latency budget, not both")
  lat = np.array([p.latency for p in frontier])
  acc = np.array([p.accuracy for p in frontier])
  if accuracy_floor is not None:
    floor = float(accuracy_floor)
    if not np.isfinite(floor):
      raise ValueError(f"accuracy floor must be finite, got {accuracy_floor}")
    ok = np.flatnonzero(meets_floor(acc, floor))
    if ok.size == 0:
      best = int(np.argmax(acc))
      shown_floor, shown_best = shown_apart(floor, float(acc[best]))
      raise InfeasibleError(f"accuracy floor {shown_floor} is infeasible: the best achievable "
                       f"predicted accuracy is {shown_best} (schedule "
                       f"{','.join(map(str, frontier[best].counts))})")
    i = int(ok[np.lexsort((-acc[ok], lat[ok]))[0]])
    return frontier[i], "accuracy_floor"
  if latency_budget is not None:
    budget = float(latency_budget)
    if not np.isfinite(budget):
      raise ValueError(f"latency budget must be finite, got {latency_budget}")
    ok = np.flatnonzero(lat <= budget)
    if ok.size == 0:
      best = int(np.argmin(lat))
      shown_budget, shown_best = shown_apart(1e3 * budget, 1e3 * float(lat[best]))
      raise InfeasibleError(f"latency budget {budget:g} s ({shown_budget} ms) is infeasible: "
                            f"the fastest achievable predicted latency is {shown_best} ms "
                            f"(schedule {','.join(map(str, frontier[best].counts))})")
    i = int(ok[np.lexsort((lat[ok], -acc[ok]))[0]])
    return frontier[i], "latency_budget"
  u = utility(lat, np.maximum(acc, 0.0), alpha)
  best = np.flatnonzero(u >= u.max() - 1e-12)
  i = int(best[np.argmin(lat[best])])
  return frontier[i], "utility"


@dataclasses.dataclass(frozen=True, eq=False)
class MultiLayerSolution:
  """Multi-layer result: the exact frontier, the chosen plan and the unpruned reference."""
  frontier: Tuple[Plan, ...]
  chosen: Plan
  criterion: str
  full: Plan
  model: CostModel
  step_bottoms_only: bool

  @property
  def grid(self) -> np.ndarray:
    return self.model.ns


def solve_multilayer(ns: ArrayLike, block_latency: ArrayLike, sensitivity: ArrayLike,
                     full_accuracy: float, *, depth: int, num_tokens: int,
                     layers: Optional[Sequence[int]] = None, embed_latency: float = 0.0,
                     head_latency: Union[float, ArrayLike] = 0.0,
                     reduce_latency: Optional[ArrayLike] = None,
                     accuracy_model: str = "incremental", monotone: bool = True,
                     step_bottoms_only: bool = False, pair_noise: Optional[ArrayLike] = None,
                     accuracy_floor: Optional[float] = None,
                     latency_budget: Optional[float] = None,
                     alpha: float = 0.5,
                     max_remove: Optional[ArrayLike] = None) -> MultiLayerSolution:
  """Multi-layer schedule: exact Pareto frontier + one chosen plan (see `make_cost_model`,
  `choose`; `max_remove` [K]: the method's per-block removal cap at each count). With
  `step_bottoms_only`, the grid is first restricted to the step bottoms of the block latency
  (`step_bottoms`, `pair_noise` [K - 1] on the ascending grid) plus num_tokens.
  """
  check_alpha(alpha)
  if accuracy_floor is not None and latency_budget is not None:
    raise ValueError("give either an accuracy floor or a latency budget, not both")
  model = make_cost_model(ns, block_latency, sensitivity, full_accuracy, depth=depth,
                          num_tokens=num_tokens, layers=layers, embed_latency=embed_latency,
                          head_latency=head_latency, reduce_latency=reduce_latency,
                          accuracy_model=accuracy_model, monotone=monotone,
                          max_remove=max_remove)
  if step_bottoms_only:
    mask = step_bottoms(model.ns, model.block, pair_noise)
    if not mask[:-1].any():     # (the choice was the unpruned model, or a budget "infeasible")
      raise ValueError(
          f"step_bottoms_only left no count below the unpruned {model.num_tokens}: the block "
          f"latency rises by more than its noise at no count of the grid "
          f"({', '.join(map(str, model.ns.tolist()))}), so no pruned schedule would remain; "
          f"drop step_bottoms_only (or lower the noise multiple, --step_k)")
    model = dataclasses.replace(model, ns=model.ns[mask], block=model.block[mask],
                                reduce=model.reduce[mask], head=model.head[mask],
                                drop=model.drop[:, mask],
                                min_keep=None if model.min_keep is None
                                else model.min_keep[mask])
  frontier = pareto_frontier(model)
  full_counts = (model.num_tokens,) * (depth + 1)
  full = Plan(full_counts, *predict_schedule(model, full_counts))
  chosen, criterion = choose(frontier, accuracy_floor=accuracy_floor,
                             latency_budget=latency_budget, alpha=alpha)
  return MultiLayerSolution(frontier=frontier, chosen=chosen, criterion=criterion, full=full,
                            model=model, step_bottoms_only=bool(step_bottoms_only))
