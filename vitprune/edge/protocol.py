"""The profiler's timing protocol without jax, for IREE modules on a board.

Same protocol and fields as `vitprune.profile.timing` (which imports jax at module level, so the
board cannot import it): `warmup` untimed calls, then timed calls until `min_run_time` seconds and
at least `min_reps` calls; median with the IQR as spread; points visited in a seeded shuffled
order; points whose relative IQR exceeds `max_rel_iqr` re-measured (at most `max_retries`
rounds, reshuffled), keeping the tighter measurement. A "call" here is a synchronous IREE
invocation whose result is copied to the host (the IREE counterpart of `block_until_ready`).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class TimingConfig:
  """Field for field `vitprune.profile.timing.TimingConfig` (profile JSON 'timing')."""
  min_run_time: float = 0.5
  warmup: int = 3
  min_reps: int = 5
  max_reps: int = 100_000
  max_rel_iqr: float = 0.1
  max_retries: int = 2
  seed: int = 0

  def __post_init__(self):
    checks = ((self.min_run_time > 0, f"min_run_time must be > 0 seconds, got "
               f"{self.min_run_time}"),
              (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
              (self.min_reps >= 3, f"min_reps must be >= 3 (a median and an IQR need "
               f"samples), got {self.min_reps}"),
              (self.max_reps >= self.min_reps, f"max_reps {self.max_reps} < min_reps "
               f"{self.min_reps}"),
              (self.max_rel_iqr > 0, f"max_rel_iqr must be > 0, got {self.max_rel_iqr}"),
              (self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}"))
    for ok, msg in checks:
      if not ok:
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class Measurement:
  """Seconds; the attribute names `records.Point.from_measurement` reads."""
  median: float
  q25: float
  q75: float
  samples: Tuple[float, ...]
  compile_s: float = 0.0
  retries: int = 0

  @property
  def iqr(self) -> float:
    return self.q75 - self.q25

  @property
  def rel_iqr(self) -> float:
    return self.iqr / self.median if self.median > 0 else float("inf")


def summarize(samples: Sequence[float], compile_s: float = 0.0, retries: int = 0
              ) -> Measurement:
  q25, med, q75 = np.percentile(np.asarray(samples, np.float64), [25, 50, 75])
  return Measurement(float(med), float(q25), float(q75), tuple(float(s) for s in samples),
                     float(compile_s), int(retries))


def time_calls(call: Callable[[], Any], cfg: TimingConfig,
               clock: Callable[[], float] = time.perf_counter) -> List[float]:
  """Warm-up, then per-call seconds of `call()` (which must block until done)."""
  for _ in range(cfg.warmup):
    call()
  samples: List[float] = []
  start = clock()
  while len(samples) < cfg.max_reps:
    t0 = clock()
    call()
    samples.append(clock() - t0)
    if len(samples) >= cfg.min_reps and clock() - start >= cfg.min_run_time:
      break
  return samples


def measure_all(calls: Mapping[Hashable, Callable[[], Any]], cfg: TimingConfig, *,
                compile_s: Mapping[Hashable, float] = None,
                on_done: Callable[[Hashable], None] = None) -> Dict[Hashable, Measurement]:
  """Times every `key: call` in a seeded shuffled order, re-measuring wide points."""
  compile_s = compile_s or {}
  keys = list(calls)
  rng = np.random.default_rng(cfg.seed)
  out: Dict[Hashable, Measurement] = {}
  for i in rng.permutation(len(keys)):
    key = keys[i]
    out[key] = summarize(time_calls(calls[key], cfg), compile_s.get(key, 0.0))
    if on_done:
      on_done(key)
  for attempt in range(1, cfg.max_retries + 1):
    wide = [k for k in keys if out[k].rel_iqr > cfg.max_rel_iqr]
    if not wide:
      break
    for i in rng.permutation(len(wide)):
      key = wide[i]
      m = summarize(time_calls(calls[key], cfg), out[key].compile_s, attempt)
      out[key] = m if m.rel_iqr < out[key].rel_iqr else dataclasses.replace(
          out[key], retries=attempt)
  return out
