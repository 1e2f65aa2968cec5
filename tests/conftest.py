"""Shared test helpers, and one persistent XLA compilation cache for the whole test session.

Many tests compile the same graphs (vit_digits at the same schedules, in-process and in the CLI
subprocesses they start); the cache compiles each distinct graph once per session. It lives in
a fresh temporary directory (nothing carries over between runs) and is set through the
environment before jax is imported, so subprocesses share it. Set VITPRUNE_TEST_XLA_CACHE=0 to
run without it.
"""
import atexit
import os
import shutil
import tempfile

if os.environ.get("VITPRUNE_TEST_XLA_CACHE", "1") != "0" and \
    "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="vitprune_test_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


def solution_file(path, cfg, counts, *, mode="paper", method="pomt", frontier=(),
                  settings=None):
  """Writes a genuine `Solution` record choosing `counts` (predictions are placeholders: 1 ms,
  accuracy 0.9) and returns its path."""
  from vitprune import jsonio  # pylint: disable=g-import-not-at-top  (test helper)
  from vitprune.records import solution as S  # pylint: disable=g-import-not-at-top

  def cand(c):
    return S.Candidate(counts=tuple(c), schedule="list:" + ",".join(map(str, c)),
                       predicted_latency_s=1e-3, predicted_accuracy=0.9)

  sol = S.Solution(
      mode=mode, config=cfg,
      profile=S.ProfileRef("p.json", "0" * 64, "cpu", "cpu", "float32", 1, "measured"),
      estimate=S.EstimateRef("e.json", "0" * 64, "tokens", method, "accuracy", (None,), 1,
                             "0" * 64, None),
      settings=dict(settings or {"alpha": 0.5}), chosen=cand(counts), method=method,
      criterion="utility", full=None, frontier=tuple(cand(c) for c in frontier),
      created="2026-01-01T00:00:00+00:00")
  from vitprune import atomic  # pylint: disable=g-import-not-at-top
  atomic.write_json(str(path), sol.to_json())
  assert jsonio.read_json(str(path), "solution")["format"] == S.FORMAT
  return str(path)
