"""Step detection on a latency-vs-tokens curve L(n).

Latency on an accelerator is a step-like function of the token count: removing one more token is
free on a flat stretch and saves a lot just below a step. Given a measured curve on a token grid
(sorted here from many to few tokens), each adjacent pair `n_hi -> n_lo` has a drop
`d = L(n_hi) - L(n_lo)` which is compared with the noise of that pair:

  noise = max(pair standard error, curve noise)
    pair standard error = sqrt(se(n_hi)^2 + se(n_lo)^2), se = 1.2533 * (IQR / 1.349) / sqrt(R):
        the standard error of a median of R samples whose spread is the IQR;
    curve noise = 1.4826 * MAD of the drops about the median drop per token (`curve_noise`):
        the robust spread of the drops, which also captures point-to-point drift that
        per-point IQRs cannot see (0 below 3 pairs).

A pair is a *step* when its excess over the trend, `d - trend`, is `> k * noise` and `> min_rel *
L(n_hi)`, where `trend = c * (n_hi - n_lo)` and `c` is the median drop per token clipped at >= 0
(the smooth per-token cost on devices without steps, e.g. CPUs: a linear curve has no steps, on
any grid). Below 3 pairs (4 token counts) no step is called: the trend is then fitted to the
very drops it judges and the curve noise cannot be estimated, so any curvature (attention's
n^2) read as a step whose place flipped between identical runs. A pair is *flat* when
`|d| <= k * noise` and `|d| <= flat_rel * L(n_hi)`: pruning buys
nothing there. Consecutive flat pairs are joined (greedily, from many tokens down) into flat
stretches as long as the change across the whole stretch is also within `k` times its noise and
within `flat_rel` of its latency, so a slow slope made of individually insignificant drops does
not become one long "flat" stretch, and a stretch is never called flat when pruning across it
saves more than `flat_rel` (on a noisy device: no flat claims at all).

A step is a change of level that lasts. When a count of a step pair `n_hi -> n_lo` is out of
line with its other neighbour (`n_hi` slower than the count above it, or `n_lo` faster than the
count below it, by more than `k` times their noise; a neighbour itself out of line the other way,
a burst right below a step, does not count), or two neighbouring counts are together (`n_hi`
and the count above it both slower than the next one up, which is in line with its own other
neighbour: a burst of load over two measurements; `n_lo` and the count below it likewise
faster), the pair is a step only if the drop from that neighbour instead passes the same two
tests, and its saving is measured from there (`Step.level_from`, `level_to`). Otherwise the
counts out of line may be *lone counts*, out of line with both neighbours of the one or two,
which agree with each other (differ by the trend only, neither way a step):
  * slow: `n_hi` (a burst of load during its measurement, or a shape the compiler handles badly);
  * fast: `n_lo` (an aligned shape on an accelerator, or a quiet moment during its measurement;
    if it holds when measured again, prune to exactly it).
A pair with no count out of line must hold one count on: where the next count below is back
at the level above it (it agrees with `n_hi` and is nearer it than `n_lo`), `n_lo` is a lone
fast count; where the next count above is at the level below, `n_hi` a lone slow one (a dip or
a bump whose rebound fell just short of the "slower" test).
If it is none, the pair is still a step where the level changes from two counts above it to two
below it (a level of one count between two steps, beside a burst), and no step otherwise (two
counts out of line at once around an unchanged level, or a rise).
Two lone counts side by side (a zigzag across a real step: which one is out of line cannot be
told) explain each other away: both their pairs stay steps. The largest (smallest) count cannot
be a lone slow (fast) one: it has no neighbour above (below).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Collection, List, Optional, Sequence, Tuple

import numpy as np

from vitprune.console import counted

_IQR_TO_SIGMA = 1.0 / 1.349     # normal distribution: IQR = 1.349 sigma
_MEDIAN_SE = 1.2533             # standard error of a median = 1.2533 sigma / sqrt(R)
_MAD_TO_SIGMA = 1.4826
MIN_POINTS_FOR_STEPS = 4        # 3 drops: a trend and a curve noise not fitted to the pair judged


# Said once under a curve's lines where one of them was timed apart (`StepReport.describe`).
APART_NOTE = ("timed apart: the two sides were timed in separate measurements (runs merged into "
              "one profile, chunks, the adaptive refinement, re-measured wide points, the main "
              "job's re-timing); the machine's change of speed between them may be part of the "
              "difference, or hide one: time those counts again together, in one run, before "
              "pruning to it")


def when_words(marks: Sequence[str]) -> Tuple[List[str], str]:
  """Measurement marks (`measured_at`) as a sentence names them -> (words, ' UTC' or ''): UTC
  marks as their time of day where they share a date ('15:21:10.726'), else as date and time
  ('2026-12-05 10:00:00.000'); other text as it is."""
  if not all(len(m) == 29 and m[10] == "T" and m.endswith("+00:00") for m in marks):
    return list(marks), ""
  one_day = len({m[:10] for m in marks}) == 1
  return [m[11:-6] if one_day else m[:-6].replace("T", " ") for m in marks], " UTC"


@dataclasses.dataclass(frozen=True)
class Step:
  """The level changes between `n_from` and `n_to` tokens: it saves `saving_s` seconds
  (`saving_frac` of the level above). The levels are L(level_from) and L(level_to): the pair's
  own counts, except where one is out of line with its other neighbour and the step was
  confirmed from that neighbour instead (n_from slower than the count above it: the level above
  is that count's; n_to faster than the count below: the level below is that count's), so a
  slow measurement at n_from does not add its own delay to the saving. `measured_apart`: when
  the two levels were timed in separate measurements (their `measured_at`, above and below),
  () when in one (or not recorded): the machine's change of speed between two measurements
  (`APART_NOTE`) may be part of the saving."""
  n_from: int
  n_to: int
  latency_from: float        # L(level_from), seconds
  latency_to: float          # L(level_to), seconds
  noise_s: float
  level_from: int            # n_from, or the count above it
  level_to: int              # n_to, or the count below it
  measured_apart: Tuple[str, ...] = ()

  @property
  def saving_s(self) -> float:
    return self.latency_from - self.latency_to

  @property
  def saving_frac(self) -> float:
    return self.saving_s / self.latency_from

  def describe(self) -> str:
    out_of_line = [f"{self.n_from} ran slower than {self.level_from}"] * (
        self.level_from != self.n_from) + [f"{self.n_to} ran faster than {self.level_to}"] * (
        self.level_to != self.n_to)
    words, utc = when_words(self.measured_apart)
    apart = f"; timed apart: {' and '.join(words)}{utc}" if self.measured_apart else ""
    return (f"{self.n_from} -> {self.n_to} saves {100 * self.saving_frac:.1f}% "
            f"({1e3 * self.saving_s:.4g} ms" + (
                f", measured from {self.level_from} to {self.level_to}: "
                f"{' and '.join(out_of_line)}" if out_of_line else "") + apart + ")")


@dataclasses.dataclass(frozen=True)
class Flat:
  """Tokens `n_hi` down to `n_lo` cost the same within noise: pruning there buys nothing.
  `measured_apart`: the measurements (`measured_at`) that timed the stretch's counts, where
  more than one is known (a machine slower in the later one can hide a saving), else ()."""
  n_hi: int
  n_lo: int
  latency_hi: float
  latency_lo: float
  measured_apart: Tuple[str, ...] = ()

  def describe(self) -> str:
    saved = self.latency_hi - self.latency_lo
    size = f"{100 * abs(saved) / self.latency_hi:.1f}% ({1e3 * abs(saved):.4g} ms)"
    # (a flat whose low end timed slower read 'saves -0.3% (-0.002079 ms)')
    pruned = self.n_hi - self.n_lo       # (a one-count stretch read 'pruning 1 tokens saves')
    words, utc = when_words(self.measured_apart)
    apart = f" (timed apart: {' and '.join(words)}{utc})" if self.measured_apart else ""
    return (f"{self.n_hi} .. {self.n_lo} flat: pruning {counted(pruned, 'token')} saves "
            + (size if saved >= 0 else f"nothing: {self.n_lo} tokens timed {size} slower than "
               f"{self.n_hi}") + apart)


@dataclasses.dataclass(frozen=True)
class Lone:
  """`n` tokens measured slower (`slow`) or faster than both `n_above` and `n_below`, which
  differ from each other by the trend only: a lone count, not a step (one of two neighbouring
  counts out of line together: `n_above` / `n_below` are the counts either side of the two).
  `measured_apart`: when `n` was timed in another measurement than both of them, its
  `measured_at` and then theirs (one, or two when they differ too); () otherwise."""
  n: int
  n_above: int
  n_below: int
  latency_s: float
  latency_above_s: float
  latency_below_s: float
  slow: bool
  measured_apart: Tuple[str, ...] = ()

  def describe(self) -> str:
    why = ("a burst of load, or a shape the compiler handles badly" if self.slow else
           "an aligned shape, or a quiet moment: prune to exactly it if it holds when measured "
           "again")
    words, utc = when_words(self.measured_apart)
    apart = (f"; timed apart from both: {words[0]} against {' and '.join(words[1:])}{utc}"
             if self.measured_apart else "")
    return (f"{self.n} lone {'slow' if self.slow else 'fast'} count: "
            f"{100 * (self.latency_s / self.latency_above_s - 1):+.1f}% vs {self.n_above}, "
            f"{100 * (self.latency_s / self.latency_below_s - 1):+.1f}% vs {self.n_below}, which "
            f"differ by the trend only: not a step ({why}{apart})")


@dataclasses.dataclass(frozen=True)
class StepReport:
  steps: Tuple[Step, ...]
  flats: Tuple[Flat, ...]
  curve_noise_s: float   # 1.4826 * MAD of the drops about the trend
  trend_s: float         # median drop per token, clipped at >= 0
  num_points: int = 0    # token counts of the curve (0: not given)
  lone: Tuple[Lone, ...] = ()   # counts out of line with both neighbours (not steps)

  def describe(self) -> List[str]:
    if not self.steps and 0 < self.num_points < MIN_POINTS_FOR_STEPS:
      lines = [f"no steps called: {self.num_points} token counts are too few to tell a step "
               f"from the trend (at least {MIN_POINTS_FOR_STEPS})"]
    else:
      lines = [s.describe() for s in self.steps] or ["no steps above noise"]
    apart = any(x.measured_apart for x in self.steps + self.lone)
    flats_apart = not apart and any(f.measured_apart for f in self.flats)
    return (lines + [c.describe() for c in self.lone] + [APART_NOTE] * apart
            + [f.describe() for f in self.flats] + [APART_NOTE] * flats_apart)


def _check_curve(tokens, medians, iqrs, counts):
  t = np.asarray(tokens)
  if t.ndim != 1 or t.size < 2:
    raise ValueError(f"step detection needs at least 2 token counts, got {t.size}")
  if len(set(t.tolist())) != t.size:
    raise ValueError(f"token counts must be unique, got {sorted(t.tolist())}")
  arrays = []
  for name, a in (("medians", medians), ("iqrs", iqrs), ("counts", counts)):
    if a is None:
      arrays.append(None)
      continue
    a = np.asarray(a, np.float64)
    if a.shape != t.shape:
      raise ValueError(f"{name} has shape {a.shape}, tokens {t.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
      raise ValueError(f"{name} must be finite and non-negative")
    arrays.append(a)
  if np.any(arrays[0] <= 0):
    raise ValueError("median latencies must be > 0")
  if arrays[2] is not None and np.any(arrays[2] < 1):
    raise ValueError("sample counts must be >= 1")
  return t.astype(np.int64), arrays


def median_se(iqrs: np.ndarray, counts: Optional[np.ndarray]) -> np.ndarray:
  """[P] IQRs and sample counts -> [P] standard errors of the medians."""
  r = np.ones_like(iqrs) if counts is None else counts
  return _MEDIAN_SE * iqrs * _IQR_TO_SIGMA / np.sqrt(r)


def pair_noise(iqrs: np.ndarray, counts: Optional[np.ndarray]) -> np.ndarray:
  """[P] IQRs and sample counts (sorted by tokens, descending) -> [P - 1] noise of each drop."""
  se = median_se(iqrs, counts)
  return np.sqrt(se[:-1] ** 2 + se[1:] ** 2)


def curve_noise(medians: Sequence[float], tokens: Optional[Sequence[int]] = None) -> float:
  """[P] median latencies of a curve ordered by token count (either direction), and its [P]
  token counts in the same order -> its noise: 1.4826 * MAD of the drops between neighbouring
  points about the per-token trend (0 with fewer than 3 drops). Without `tokens` the grid is
  taken as evenly spaced (on one, both give the same value).

  A MAD ignores the sign, so ascending and descending orders give the same value.
  """
  m = np.asarray(medians, np.float64)
  drops = m[:-1] - m[1:]
  if drops.size < 3:
    return 0.0
  if tokens is not None:    # an uneven grid: a linear curve's drops grow with the gaps
    gaps = np.abs(np.diff(np.asarray(tokens, np.float64)))
    drops = drops - np.median(drops / gaps) * gaps
  return _MAD_TO_SIGMA * float(np.median(np.abs(drops - np.median(drops))))


def detect_steps(tokens: Sequence[int], medians: Sequence[float],
                 iqrs: Optional[Sequence[float]] = None, counts: Optional[Sequence[int]] = None,
                 *, k: float = 4.0, min_rel: float = 0.01, flat_rel: float = 0.02,
                 measured_at: Optional[Sequence[str]] = None) -> StepReport:
  """Steps and flat stretches of a curve given per-point medians, IQRs and sample counts.

  tokens, medians, iqrs, counts: [P] in any order (sorted by tokens descending here). `iqrs=None`
  means zero spread, `counts=None` means one sample per point. measured_at: [P] which
  measurement timed each point ('' not known); a step between levels of two known, different
  ones says so (`Step.measured_apart`), as do a lone count and a flat stretch.
  """
  if k <= 0:
    raise ValueError(f"k must be > 0, got {k}")
  if min_rel < 0:
    raise ValueError(f"min_rel must be >= 0, got {min_rel}")
  if flat_rel < 0:
    raise ValueError(f"flat_rel must be >= 0, got {flat_rel}")
  iqrs = np.zeros(len(tokens)) if iqrs is None else iqrs
  t, (med, iqr, cnt) = _check_curve(tokens, medians, iqrs, counts)
  if measured_at is not None and len(measured_at) != t.size:
    raise ValueError(f"measured_at has {len(measured_at)} entries for {t.size} token counts")
  order = np.argsort(-t)
  t, med, iqr = t[order], med[order], iqr[order]
  when = [""] * t.size if measured_at is None else [str(measured_at[i]) for i in order]
  cnt = None if cnt is None else cnt[order]
  drop = med[:-1] - med[1:]                                   # [P - 1]
  gap = (t[:-1] - t[1:]).astype(np.float64)                   # [P - 1] tokens per pair
  curve_s = curve_noise(med, t)
  per_token = max(float(np.median(drop / gap)), 0.0)
  excess = drop - per_token * gap
  noise = np.maximum(pair_noise(iqr, cnt), curve_s)
  is_step = (excess > k * noise) & (excess > min_rel * med[:-1]) & (t.size >= MIN_POINTS_FOR_STEPS)
  is_flat = ((np.abs(drop) <= k * noise) & (np.abs(drop) <= flat_rel * med[:-1])) & ~is_step
  se = median_se(iqr, cnt)

  def noise_between(a, b):     # of the difference of n[a]'s and n[b]'s medians (any two counts)
    return max(float(np.hypot(se[a], se[b])), curve_s)

  def is_step_between(a, b):   # the drop from n[a] to n[b] (a < b) passes the two step tests
    excess_ab = med[a] - med[b] - per_token * (t[a] - t[b])
    return excess_ab > k * noise_between(a, b) and excess_ab > min_rel * med[a]

  def agree(a, b):             # n[a] and n[b] differ by the trend only (neither way a step)
    excess_ab = abs(med[a] - med[b] - per_token * (t[a] - t[b]))
    return excess_ab <= k * noise_between(a, b) or excess_ab <= min_rel * med[a]

  def slower(a, b):            # n[a] slower than n[b] by more than noise (either order)
    return med[a] - med[b] > k * noise_between(a, b)

  def out_of_line(j, slow):    # n[j] slower (faster) than both neighbours, which agree
    if not 0 < j < t.size - 1 or not agree(j - 1, j + 1):
      return False
    return (slower(j, j - 1) and slower(j, j + 1) if slow else
            slower(j - 1, j) and slower(j + 1, j))

  # How many counts (2 or 1, else 0) down to n_hi are all slower than the count above them, or
  # from n_lo on all faster than the count below them (a burst of load over two measurements or
  # one); a count itself out of line the other way (a burst right below a step) says nothing,
  # and two only where that count is in line with its own other neighbour (two counts of a
  # real level faster than a burst below them are not a fast pair).
  def in_line(j, k):           # count j agrees with its neighbour k (none there: not known)
    return 0 <= k < t.size and agree(min(j, k), max(j, k))

  def above_slow(i):
    return next((w for w in (2, 1) if i - w >= 0 and not out_of_line(i - w, slow=False) and
                 (w == 1 or in_line(i - w, i - w - 1)) and
                 all(slower(j, i - w) for j in range(i - w + 1, i + 1))), 0)

  def below_fast(i):
    return next((w for w in (2, 1) if i + 1 + w < t.size and not out_of_line(i + 1 + w, slow=True)
                 and (w == 1 or in_line(i + 1 + w, i + 2 + w)) and
                 all(slower(i + 1 + w, j) for j in range(i + 1, i + 1 + w))), 0)

  def lone_count(j, a, b, slow):   # count j out of line with counts a and b
    others = tuple(dict.fromkeys((when[a], when[b])))
    apart = ((when[j],) + others if when[j] and all(others) and when[j] not in others else ())
    return Lone(int(t[j]), int(t[a]), int(t[b]), float(med[j]), float(med[a]), float(med[b]),
                slow=slow, measured_apart=apart)

  def lone_at(i, hi_w, lo_w):  # the Lones of the counts of step pair i out of line, or ()
    if hi_w and agree(i - hi_w, i + 1):
      return tuple(lone_count(j, i - hi_w, i + 1, True) for j in range(i - hi_w + 1, i + 1))
    if lo_w and agree(i, i + 1 + lo_w):
      return tuple(lone_count(j, i, i + 1 + lo_w, False) for j in range(i + 1, i + 1 + lo_w))
    if not (hi_w or lo_w):     # a dip or a bump of one count, the level back beside it
      if not holds_below(i) and agree(i, i + 2):
        return (lone_count(i + 1, i, i + 2, False),)
      if not holds_above(i) and agree(i - 1, i + 1):
        return (lone_count(i, i - 1, i + 1, True),)
    return ()

  # The new level holds at the next count below (the old one at the next above) unless that
  # count agrees with the other side of the pair and is nearer it than the pair's own count
  # (itself out of line: no evidence): a dip of one count whose rebound fell just short of the
  # "slower" test was a step (a probe: 59 1.182, 58 0.884, 57 1.125 ms, '59 -> 58 saves 25%').
  def back_at(j, near, far):   # count j is back at the level of `far`, not at `near`'s
    return agree(min(j, far), max(j, far)) and abs(med[j] - med[far]) < abs(med[j] - med[near])

  def holds_below(i):
    return i + 2 >= t.size or out_of_line(i + 2, slow=True) or not back_at(i + 2, i + 1, i)

  def holds_above(i):
    return i < 1 or out_of_line(i - 1, slow=False) or not back_at(i - 1, i, i + 1)

  verdict = {}                 # step pair i -> "step", "none" or the Lones it was instead
  levels = {}                  # step pair i -> the indices of its levels above and below
  for i in np.flatnonzero(is_step):
    hi_w, lo_w = above_slow(i), below_fast(i)
    lasts = (holds_below(i) and holds_above(i) if not (hi_w or lo_w)   # (no count out of line)
             else is_step_between(i - hi_w, i + 1 + lo_w))
    # Not lasting and no lone count: a step still where the level changes across the wider
    # neighbourhood (a level of one count between two steps, beside a burst), else none.
    verdict[i] = "step" if lasts else (lone_at(i, hi_w, lo_w) or (
        "step" if is_step_between(max(i - 2, 0), min(i + 3, t.size - 1)) else "none"))
    # (the wider neighbourhood's step: the pair's own drop, which passed the step tests)
    levels[i] = (i - hi_w, i + 1 + lo_w) if lasts else (i, i + 1)
  lone = tuple(dict.fromkeys(c for _, v in sorted(verdict.items()) if isinstance(v, tuple)
                             for c in v))
  lone_ns = {c.n for c in lone}       # (a pair of counts named lone is no step as well)
  verdict = {i: v for i, v in verdict.items()
             if v != "step" or not {int(t[i]), int(t[i + 1])} & lone_ns}

  def apart(hi, lo):    # the two measurements of levels hi and lo, where known and different
    return (when[hi], when[lo]) if when[hi] and when[lo] and when[hi] != when[lo] else ()

  steps = tuple(Step(int(t[i]), int(t[i + 1]), float(med[levels[i][0]]),
                     float(med[levels[i][1]]), float(noise[i]), int(t[levels[i][0]]),
                     int(t[levels[i][1]]), apart(*levels[i]))
                for i, v in sorted(verdict.items()) if v == "step")

  def span_flat(i, j):  # the whole span n[i] -> n[j + 1] changes within noise
    change = abs(med[i] - med[j + 1])
    return change <= k * noise_between(i, j + 1) and change <= flat_rel * med[i]

  flats, i = [], 0
  while i < drop.size:
    if not is_flat[i]:
      i += 1
      continue
    j = i
    while j + 1 < drop.size and is_flat[j + 1] and span_flat(i, j + 1):
      j += 1
    marks = tuple(dict.fromkeys(w for w in when[i:j + 2] if w))   # (the stretch's, known)
    flats.append(Flat(int(t[i]), int(t[j + 1]), float(med[i]), float(med[j + 1]),
                      marks if len(marks) > 1 else ()))
    i = j + 1
  return StepReport(steps, tuple(flats), curve_s, per_token, int(t.size), lone)


CONFIRM_MAX_COUNTS = 16   # counts one confirmation times again at most (largest savings first)


def _confirm_windows(tokens: Sequence[int], report: StepReport) -> List[Tuple[Any, List[int]]]:
  """[(step or lone count timed apart, its window of `tokens`)]: steps by saving, largest first,
  then lone counts (`confirm_counts`)."""
  t = sorted({int(v) for v in tokens}, reverse=True)
  at = {n: i for i, n in enumerate(t)}
  windows = [(s, t[max(at[s.level_from] - 1, 0):at[s.level_to] + 2])
             for s in sorted(report.steps, key=lambda s: -s.saving_s) if s.measured_apart]
  windows += [(c, t[at[c.n_above]:at[c.n_below] + 1]) for c in report.lone if c.measured_apart]
  return windows


def confirm_counts(tokens: Sequence[int], report: StepReport,
                   limit: int = CONFIRM_MAX_COUNTS,
                   allowed: Optional[Collection[int]] = None) -> List[int]:
  """The counts of the curve `tokens` (analysed: `report`) to time again together, in one
  measurement, where a step or a lone count was timed apart -> descending; [] where none was.
  A step's window runs from the count above its upper level down to the count below its lower
  one (the neighbours its out-of-line tests read first), a lone count's from `n_above` to
  `n_below`; steps by saving, largest first, then lone counts; a window whole or not at all,
  `limit` counts in all; `allowed` (the counts a run may time: its grid): a window with a count
  outside it is not timed at all (half a window timed again is still timed apart)."""
  chosen: List[int] = []
  for _, w in _confirm_windows(tokens, report):
    if allowed is not None and not set(w) <= set(allowed):
      continue
    new = [n for n in w if n not in chosen]
    if len(chosen) + len(new) <= limit:
      chosen += new
  return sorted(chosen, reverse=True)


def confirmation_line(counts: Sequence[int], before: StepReport, after: StepReport,
                      limit: int = CONFIRM_MAX_COUNTS, *,
                      tokens: Optional[Sequence[int]] = None,
                      allowed: Optional[Collection[int]] = None) -> str:
  """What timing `counts` again together (`confirm_counts`) did to the steps and lone counts of
  `before` that were timed apart (`after`: the curve analysed again): each holds or is gone,
  and a step or lone count among `counts` that `before` did not have is named (a step that
  moved by a count: 'is no step', then the new one); those left out are counted, by why: the
  bound, or (with `tokens`, the curve's counts, and `allowed`, the run's grid) a window reaching
  counts outside the grid. `counts` may be empty (nothing fitted): the line says so."""
  done, told, left, outside = set(counts), [], 0, 0
  window_of = {id(x): w for x, w in _confirm_windows(tokens, before)} if tokens else {}

  def skipped(x) -> None:
    nonlocal left, outside
    w = window_of.get(id(x))
    if allowed is not None and w is not None and not set(w) <= set(allowed):
      outside += 1
    else:
      left += 1

  for s in (s for s in before.steps if s.measured_apart):
    if not {s.level_from, s.level_to} <= done:
      skipped(s)
      continue
    same = next((a for a in after.steps if (a.n_from, a.n_to) == (s.n_from, s.n_to)), None)
    told.append(f"{s.n_from} -> {s.n_to} " + (
        f"holds (saves {100 * same.saving_frac:.1f}%)" if same else "is no step"))
  for c in (c for c in before.lone if c.measured_apart):
    if c.n not in done:
      skipped(c)
      continue
    kind = "slow" if c.slow else "fast"
    same = any(a.n == c.n and a.slow == c.slow for a in after.lone)
    told.append(f"lone {kind} count {c.n} " + ("holds" if same else "is gone"))
  pairs = {(s.n_from, s.n_to) for s in before.steps}
  told += [f"a step {a.n_from} -> {a.n_to} found (saves {100 * a.saving_frac:.1f}%)"
           for a in after.steps if {a.n_from, a.n_to} <= done and (a.n_from, a.n_to) not in pairs]
  lone = {(c.n, c.slow) for c in before.lone}
  told += [f"a lone {'slow' if a.slow else 'fast'} count {a.n} found" for a in after.lone
           if a.n in done and (a.n, a.slow) not in lone]
  more = []
  if left:
    more.append(f"{left} {'more ' if told else ''}timed apart, not timed again (at most "
                f"{limit} counts)")
  if outside:
    more.append(f"{outside} {'more ' if told or left else ''}timed apart, not timed again "
                "(its counts reach beyond the token counts this run profiles)")
  if not counts:
    return ("timed nothing again together (steps and lone counts timed apart): "
            + "; ".join(more))
  return (f"timed {', '.join(map(str, counts))} again together, in one "
          f"measurement (steps and lone counts timed apart): "
          + "; ".join(told + more))


def refine_grid(tokens: Sequence[int], report: StepReport, *, lo: int, hi: int) -> List[int]:
  """Adaptive grid: every count inside the coarse intervals that are not flat; flat intervals
  (latency unchanged within noise) are not filled in.

  Returns the sorted (descending) new counts in [lo, hi] that were not measured yet.
  """
  return sorted(refine_order(tokens, report, lo=lo, hi=hi), reverse=True)


def refine_order(tokens: Sequence[int], report: StepReport, *, lo: int, hi: int) -> List[int]:
  """`refine_grid`'s counts, most informative first, so that any prefix is a useful budget.

  The intervals holding a step come first (they pin the step's place), then the other non-flat
  ones; within each group the counts follow bisection order: every interval's midpoint, then
  the quarter points, and so on (the curve at a resolution that doubles with each level).
  """
  t = sorted({int(v) for v in tokens}, reverse=True)
  flat_pairs = set()
  for f in report.flats:
    inside = [v for v in t if f.n_lo <= v <= f.n_hi]
    flat_pairs.update(zip(inside[:-1], inside[1:]))
  step_pairs = {(s.n_from, s.n_to) for s in report.steps}
  keyed = []
  for a, b in zip(t[:-1], t[1:]):
    if (a, b) in flat_pairs:
      continue
    group = 0 if (a, b) in step_pairs else 1
    keyed += [((group, level, -n), n) for n, level in bisection_levels(b, a) if lo <= n <= hi]
  return [n for _, n in sorted(keyed)]


def bisection_levels(lo: int, hi: int) -> List[Tuple[int, int]]:
  """[(count, level)] for every count strictly between `lo` and `hi`: level 0 the midpoint,
  level 1 the midpoints of the two halves, and so on (each count once)."""
  out, todo, level = [], [(lo, hi)], 0
  while todo:
    nxt = []
    for a, b in todo:
      if b - a < 2:
        continue
      mid = (a + b) // 2
      out.append((mid, level))
      nxt += [(a, mid), (mid, b)]
    todo, level = nxt, level + 1
  return out
