"""The timing protocol: AOT compile per shape, warm-up, device-resident inputs, robust medians.

    compiled, compile_s = compile_fn(fn, *args)             # jax.jit(fn).lower(*args).compile()
    jobs = compile_many({key: (fn, args)}, threads=4)      # the same, in a thread pool
    meas = measure_all({key: (compiled, args)}, TimingConfig(min_run_time=0.5))

Every point is timed as `compiled(*args)` followed by `jax.block_until_ready`, repeated until
`min_run_time` seconds have elapsed (and at least `min_reps` times); its latency is the median of
the per-call samples with the inter-quartile range (IQR) as spread. Points are visited in a seeded
random order, so slow drift (thermal, clocks, other processes) spreads over the whole curve instead
of masquerading as a step; points whose relative IQR exceeds `max_rel_iqr` are re-measured (a
bounded number of times, again in shuffled order) and the tighter measurement is kept.
Compile time is measured separately (lower + compile wall time) and never mixed with run time.
"""
from __future__ import annotations

import functools
import numbers
import os
import tempfile
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import jax

from vitprune import atomic
from vitprune import parallel
from vitprune.profile import protocol
from vitprune.profile.protocol import Measurement, TimingConfig, summarize  # noqa: F401 (API)


def enable_compilation_cache(cache_dir: str) -> None:
  """Persistent XLA compilation cache in `cache_dir`, caching every entry (no size/time floor).

  A second profile of the same shapes then loads executables instead of recompiling (the
  executables are the same ones, autotuned kernels included).
  """
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def temporary_cache_dir(prefix: str = "vitprune_jax_cache_") -> str:
  """A fresh directory for `enable_compilation_cache`, removed when the process exits (JAX keeps
  the cache setting process-wide, so the directory must outlive its caller)."""
  path = tempfile.mkdtemp(prefix=prefix)
  atomic.remove_at_exit(path)
  return path


def warm_up() -> None:
  """Starts the backend and XLA's compiler with one tiny AOT compile and call, so that the
  first phase a benchmark times does not carry the process's start-up (a second or more). The
  graph holds a constant drawn for this process, so a persistent compilation cache
  (`enable_compilation_cache`) never answers it: a cache hit would compile nothing."""
  salt = float(int.from_bytes(os.urandom(3), "little"))      # exact in float32
  x = device_put(jax.numpy.zeros((8, 8), jax.numpy.float32))
  compiled, _ = compile_fn(lambda a: jax.numpy.tanh(a @ a + salt).sum(), x)
  jax.block_until_ready(compiled(x))


def device_put(tree: Any) -> Any:
  """Moves a pytree onto the default device and waits, so timing never includes transfers."""
  return jax.block_until_ready(jax.device_put(tree))


def compile_fn(fn: Callable, *args) -> Tuple[Any, float]:
  """AOT-compiles `fn` for `args`' shapes -> (compiled executable, lower+compile seconds)."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t0


def compile_many(jobs: Mapping[Hashable, Tuple[Callable, Sequence[Any]]], *, threads: int = 1,
                 on_done: Optional[Callable[[Hashable, float], None]] = None
                 ) -> Dict[Hashable, Tuple[Any, float]]:
  """Compiles every `key: (fn, args)` job, `threads` at a time -> {key: (compiled, seconds)}.

  XLA compilation releases the GIL and is thread-safe, so threads overlap compiles of different
  shapes. Per-job seconds are wall times and overlap when threads > 1. `on_done(key, seconds)` is
  called (from the calling thread) as each job finishes.
  """
  if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
    raise ValueError(f"threads must be >= 1 (an int), got {threads!r}")   # (2.5 ran 2 at once)
  out = {}
  if threads == 1:
    for key, (fn, args) in jobs.items():
      out[key] = compile_fn(fn, *args)
      if on_done:
        on_done(key, out[key][1])
    return out
  done = (lambda key, result: on_done(key, result[1])) if on_done else None
  return parallel.run_jobs({key: functools.partial(compile_fn, fn, *args)
                            for key, (fn, args) in jobs.items()}, threads, done)


def time_calls(compiled: Callable, args: Sequence[Any], cfg: TimingConfig,
               clock: Callable[[], float] = time.perf_counter) -> List[float]:
  """Per-call seconds of `block_until_ready(compiled(*args))` (`protocol.time_calls`)."""
  return protocol.time_calls(compiled, args, cfg, clock, sync=jax.block_until_ready)


def measure_all(points: Mapping[Hashable, Tuple[Callable, Sequence[Any]]], cfg: TimingConfig, *,
                compile_s: Optional[Mapping[Hashable, float]] = None,
                on_done: Optional[Callable[[Hashable], None]] = None,
                timer: Callable[[Callable, Sequence[Any], TimingConfig], List[float]] = time_calls
                ) -> Dict[Hashable, Measurement]:
  """`protocol.measure_all` of jax executables: `{key: (compiled, args)}` -> {key: Measurement}
  (each call waits for the device with `block_until_ready`)."""
  return protocol.measure_all(points, cfg, compile_s=compile_s, on_done=on_done, timer=timer)
