"""The timing protocol without jax: configuration, robust summaries, shuffled measurement.

Every point is timed as `fn(*args)` (made synchronous by the caller's `sync`), repeated until
`min_run_time` seconds have elapsed (and at least `min_reps` times); its latency is the median of
the per-call samples with the inter-quartile range (IQR) as spread. Points are visited in a seeded
random order, so slow drift (thermal, clocks, other processes) spreads over the whole curve instead
of masquerading as a step; points whose relative IQR exceeds `max_rel_iqr` are re-measured (a
bounded number of times, again in shuffled order) and the tighter measurement is kept. With
`rounds > 1` each point is timed in several short bursts, one per round, every round in a fresh
shuffled order: drift then reaches every point alike (how a few candidates are compared).

`vitprune.profile.timing` applies it to jax executables (AOT compile, `block_until_ready`);
`vitprune.edge` to IREE modules on a board without jax.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vitprune import console


# Seconds of timed calls per point, at most: --min_run_time=1e308 ran for days, not refused.
MAX_RUN_TIME = 3600.0
# Calls per point (warm-up, timed) and rounds, at most: --repeats=10**12 ran for days too.
MAX_CALLS = 10 ** 7
MAX_ROUNDS = 1000
# Re-measurement rounds of noisy points, at most: --max_retries=10**8 with a tight
# --max_rel_iqr re-measured for days after the progress bar reached 100 %.
MAX_RETRIES = 100
# The fields these limits cap: they refuse runs, not records (a profile measured before a limit
# was lowered still loads: `within_run_limits`).
RUN_LIMITS = {"min_run_time": MAX_RUN_TIME, "warmup": MAX_CALLS, "min_reps": MAX_CALLS,
              "max_reps": MAX_CALLS, "rounds": MAX_ROUNDS, "max_retries": MAX_RETRIES}


def within_run_limits(fields: Dict[str, Any]) -> Dict[str, Any]:
  """`fields` (a TimingConfig's, as a profile records them) with every number above its run
  limit lowered to the limit: what `TimingConfig(**...)` checks of a recorded timing, whose run
  may predate the limit."""
  return {k: min(v, RUN_LIMITS[k]) if (k in RUN_LIMITS and isinstance(v, (int, float))
                                       and not isinstance(v, bool) and v > RUN_LIMITS[k]) else v
          for k, v in fields.items()}


@dataclasses.dataclass(frozen=True)
class TimingConfig:
  """How long and how often each point is timed.

  min_run_time: seconds of timed calls per point (per measurement round).
  warmup: untimed calls before timing (the first call after compile can be slower).
  min_reps / max_reps: bounds on the number of timed calls per round.
  max_rel_iqr: a point whose IQR / median exceeds this is re-measured.
  max_retries: at most this many re-measurement rounds.
  seed: seeds the shuffled visiting order.
  rounds: each point is timed in this many bursts of `min_run_time / rounds` seconds (each with
    its warm-up), every round visiting all points in a fresh shuffled order, samples pooled: drift
    during the measurement then reaches every point alike. For comparing a few candidates (the
    in-loop choice); 1 (one burst per point) for long curves.
  """
  min_run_time: float = 0.5
  warmup: int = 3
  min_reps: int = 5
  max_reps: int = 100_000
  max_rel_iqr: float = 0.1
  max_retries: int = 2
  seed: int = 0
  rounds: int = 1

  def __post_init__(self):
    for name in ("min_run_time", "max_rel_iqr"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {v!r}")
      if not math.isfinite(v) or not v > 0:
        raise ValueError(f"{name} must be > 0 and finite, got {v}")
    if self.min_run_time > RUN_LIMITS["min_run_time"]:
      raise ValueError(f"min_run_time must be at most {MAX_RUN_TIME:g} seconds per point, got "
                       f"{self.min_run_time:g}")
    for name in ("warmup", "min_reps", "max_reps", "max_retries", "seed", "rounds"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    for name, most in RUN_LIMITS.items():
      if name != "min_run_time" and getattr(self, name) > most:
        raise ValueError(f"{name} must be at most {most}, got {getattr(self, name)}")
    if self.warmup < 0:
      raise ValueError(f"warmup must be >= 0, got {self.warmup}")
    if self.min_reps < 3:
      raise ValueError(f"min_reps must be >= 3 (a median and an IQR need samples), "
                       f"got {self.min_reps}")
    if self.max_reps < self.min_reps:
      raise ValueError(f"min_reps must be at most max_reps ({self.max_reps}), got "
                       f"{self.min_reps}")
    if self.max_retries < 0:
      raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
    if self.seed < 0:
      raise ValueError(f"seed must be >= 0, got {self.seed}")
    if self.rounds < 1:
      raise ValueError(f"rounds must be >= 1, got {self.rounds}")


def flag_timing(**flag_values) -> TimingConfig:
  """`TimingConfig(**flag_values)` for a CLI whose flags carry the fields' names: an error names
  the flag (`--min_run_time must be > 0 ...`), not the field."""
  try:
    return TimingConfig(**flag_values)
  except ValueError as e:
    field = str(e).split(" ", 1)[0]
    if field in flag_values:
      raise ValueError(f"--{e}") from None
    raise


def repeat_timing(repeats: int, warmup: int, max_retries: int = 0) -> TimingConfig:
  """The protocol with exactly `repeats` timed calls after `warmup` untimed ones (the CLIs'
  --repeats / --warmup: errors name those flags, not the config's fields)."""
  if repeats < 3:
    raise ValueError(f"--repeats must be >= 3 for a median and an IQR, got {repeats}")
  if warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {warmup}")
  for flag, v in (("repeats", repeats), ("warmup", warmup)):
    if v > MAX_CALLS:                     # 10**12 ran for days
      raise ValueError(f"--{flag} must be at most {MAX_CALLS}, got {v}")
  return TimingConfig(min_run_time=1e-9, warmup=warmup, min_reps=repeats, max_reps=repeats,
                      max_retries=max_retries)


def relative_iqr(iqr: float, median: float) -> float:
  """IQR / median, the spread the protocol re-measures on (inf for a non-positive median)."""
  return iqr / median if median > 0 else float("inf")


# How a speed-up of two graphs is qualified when the measurement cannot tell them apart.
SPREAD_NOTE = "within the timing spread: the medians differ by less than the larger IQR"


def within_spread(median_a: float, iqr_a: float, median_b: float, iqr_b: float) -> bool:
  """Whether two medians differ by less than the larger of their IQRs: their ratio then says
  nothing (a prune run printed 'speed-up: 0.895x' of 534 / 597 ms with IQRs of 156 / 97 ms as a
  plain result)."""
  return abs(median_a - median_b) < max(iqr_a, iqr_b)


def spread_mark(median_a: float, iqr_a: float, median_b: float, iqr_b: float) -> str:
  """' (within the timing spread: ...)' to append to a comparison of two latencies that are
  `within_spread`, '' otherwise (the summary's, experiments.prune's and the in-loop choice's)."""
  return f" ({SPREAD_NOTE})" if within_spread(median_a, iqr_a, median_b, iqr_b) else ""


@dataclasses.dataclass(frozen=True)
class Measurement:
  """Summary of one point's timed samples (seconds)."""
  median: float
  q25: float
  q75: float
  samples: Tuple[float, ...]
  compile_s: float = 0.0
  retries: int = 0
  measured_at: str = ""   # when the shuffled measurement that timed it began (`measure_all`;
                          # UTC, ISO 8601 to the millisecond): its points compare without drift

  @property
  def iqr(self) -> float:
    return self.q75 - self.q25

  @property
  def rel_iqr(self) -> float:
    return relative_iqr(self.iqr, self.median)


def wide_spread_note(m: Measurement, cfg: TimingConfig) -> Optional[str]:
  """A note for a latency whose IQR / median stays above `cfg.max_rel_iqr` (after its
  re-measurements), None otherwise: a single latency printed with a 63 % spread read as any
  other (a probe of `vitprune.edge run` on a busy machine)."""
  if m.rel_iqr <= cfg.max_rel_iqr:
    return None
  rounds = (f" after {console.counted(m.retries, 're-measurement round')}" if m.retries
            else "")
  limit = cfg.max_rel_iqr * 100
  shown = console.shown_apart(m.rel_iqr * 100, limit, 3)[0]
  return (f"the latency has an IQR of {shown}% of its median{rounds}, above {limit:g}%: the "
          "machine was busy "
          "or the call's time varies, so the median is uncertain; time it again on a quieter "
          "machine before comparing it")


def summarize(samples: Sequence[float], *, compile_s: float = 0.0, retries: int = 0
              ) -> Measurement:
  """Samples [R] seconds -> median and quartiles (numpy's linear interpolation)."""
  s = np.asarray(samples, np.float64)
  if s.ndim != 1 or s.size == 0:
    raise ValueError(f"need a non-empty 1-D list of samples, got shape {s.shape}")
  if not np.all(np.isfinite(s)) or np.any(s < 0):
    raise ValueError("samples must be finite, non-negative durations")
  q25, med, q75 = np.percentile(s, [25, 50, 75])
  return Measurement(float(med), float(q25), float(q75), tuple(float(v) for v in s),
                     float(compile_s), int(retries))


def _returned(result: Any) -> Any:
  return result


def time_calls(fn: Callable, args: Sequence[Any], cfg: TimingConfig,
               clock: Callable[[], float] = time.perf_counter,
               sync: Callable[[Any], Any] = _returned) -> List[float]:
  """Warm-up, then per-call seconds of `sync(fn(*args))` until `cfg.min_run_time` has elapsed
  and at least `cfg.min_reps` calls were timed (`sync` waits for the result: jax's
  `block_until_ready`; IREE calls that copy to the host are already synchronous). A Ctrl-C
  that landed in a finaliser (dropped there, recorded by the CLI's handler) stops it at the
  next call (`console.raise_if_interrupted`): a 60 s measurement ran to its end before."""
  for _ in range(cfg.warmup):
    sync(fn(*args))
    console.raise_if_interrupted()
  samples = []
  start = clock()
  while len(samples) < cfg.max_reps:
    t0 = clock()
    sync(fn(*args))
    samples.append(clock() - t0)
    console.raise_if_interrupted()
    if len(samples) >= cfg.min_reps and clock() - start >= cfg.min_run_time:
      break
  return samples


def measure_all(points: Mapping[Hashable, Tuple[Callable, Sequence[Any]]], cfg: TimingConfig, *,
                compile_s: Optional[Mapping[Hashable, float]] = None,
                on_done: Optional[Callable[[Hashable], None]] = None,
                timer: Callable[[Callable, Sequence[Any], TimingConfig], List[float]] = time_calls
                ) -> Dict[Hashable, Measurement]:
  """Times every `key: (fn, args)` in a seeded shuffled order -> {key: Measurement}.

  With `cfg.rounds > 1` every point is timed in that many bursts, each round in a fresh
  shuffled order (`_sample_rounds`). Points with `rel_iqr > cfg.max_rel_iqr` are re-measured up
  to `cfg.max_retries` times (each re-measurement reshuffled, in rounds too); a re-measurement
  replaces the previous one when it is within `max_rel_iqr` and the previous one was not, or
  when both are (or neither is) and its upper quartile (q75) is lower: the faster and tighter
  (by relative IQR alone, the slower of two equally spread ones was kept: a probe saw every
  re-measured point ~40 % slower than its neighbours); a point stops being re-measured once a
  measurement of it is within `max_rel_iqr`. `on_done(key)` is called once per point of the
  first measurement (progress reporting). Every Measurement returned records when the pass
  that timed it began (`measured_at`, `measurement_time`): the first, or the re-measurement
  kept (a later pass over the wide points only: not compared with the others without drift).
  """
  began = measurement_time()
  compile_s = compile_s or {}
  keys = list(points)
  rng = np.random.default_rng(cfg.seed)
  out: Dict[Hashable, Measurement] = {
      k: dataclasses.replace(summarize(v, compile_s=compile_s.get(k, 0.0)), measured_at=began)
      for k, v in _sample_rounds(keys, points, cfg, rng, timer, on_done).items()}
  for attempt in range(1, cfg.max_retries + 1):
    wide = [k for k in keys if out[k].rel_iqr > cfg.max_rel_iqr]
    if not wide:
      break
    began = measurement_time()
    for key, v in _sample_rounds(wide, points, cfg, rng, timer).items():
      m = dataclasses.replace(summarize(v, compile_s=out[key].compile_s, retries=attempt),
                              measured_at=began)
      tight, was_tight = m.rel_iqr <= cfg.max_rel_iqr, out[key].rel_iqr <= cfg.max_rel_iqr
      if (tight, -m.q75) > (was_tight, -out[key].q75):
        out[key] = m
      else:
        out[key] = dataclasses.replace(out[key], retries=attempt)
  return out


def measurement_time() -> str:
  """Now, UTC, ISO 8601 to the millisecond: a measurement's `measured_at` (two begun within one
  millisecond would read as one; real ones take longer than that to time their calls)."""
  return _mark(datetime.datetime.now(datetime.timezone.utc))


def measurement_mark(text: Any) -> Optional[str]:
  """`text`, an ISO 8601 date and time with its UTC offset, as `measurement_time` writes it
  (UTC, to the millisecond: one instant, one spelling; 'Z' and '+00:00' compare equal), else
  None (a date alone, a time without an offset, anything else)."""
  if not isinstance(text, str) or "T" not in text:
    return None
  try:
    when = datetime.datetime.fromisoformat(text)
  except ValueError:
    return None
  return None if when.tzinfo is None else _mark(when)


def _mark(when: datetime.datetime) -> str:
  return when.astimezone(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _sample_rounds(keys: Sequence[Hashable], points, cfg: TimingConfig, rng, timer,
                   on_done: Optional[Callable[[Hashable], None]] = None
                   ) -> Dict[Hashable, List[float]]:
  """{key: samples}: `cfg.rounds` rounds, each visiting every key once in a fresh shuffled
  order and timing it for `min_run_time / rounds` seconds; `on_done` after a key's last burst.
  Keys come out in the order of the first round."""
  burst = (cfg if cfg.rounds == 1 else
           dataclasses.replace(cfg, min_run_time=cfg.min_run_time / cfg.rounds))
  samples: Dict[Hashable, List[float]] = {}
  for r in range(cfg.rounds):
    for i in rng.permutation(len(keys)):
      key = keys[i]
      fn, args = points[key]
      samples.setdefault(key, []).extend(timer(fn, args, burst))
      if on_done and r == cfg.rounds - 1:
        on_done(key)
  return samples
