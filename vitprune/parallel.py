"""Jobs run on a thread pool (XLA and IREE compiles release the GIL, so threads overlap them)."""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Dict, Hashable, Mapping, Optional, TypeVar

T = TypeVar("T")


def run_jobs(jobs: Mapping[Hashable, Callable[[], T]], threads: int,
             on_done: Optional[Callable[[Hashable, T], None]] = None) -> Dict[Hashable, T]:
  """Runs every `key: thunk`, `threads` at a time -> {key: result}; `on_done(key, result)` is
  called from the calling thread as each finishes. A failure or Ctrl-C drops the queued jobs
  and does not wait for the running ones (stopping a DeiT-S profile waited a minute for every
  queued compile), then propagates."""
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads)
  out: Dict[Hashable, T] = {}
  try:
    futures = {pool.submit(thunk): key for key, thunk in jobs.items()}
    for fut in concurrent.futures.as_completed(futures):
      key = futures[fut]
      out[key] = fut.result()
      if on_done:
        on_done(key, out[key])
  except BaseException:
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  pool.shutdown()
  return out
