"""Shared test helpers, and how the test session compiles (set through the environment before
jax is imported, so the CLI subprocesses the tests start compile the same way).

* One persistent XLA compilation cache for the session: many tests compile the same graphs
  (vit_digits at the same schedules, in-process and in subprocesses); each distinct graph is
  compiled once. A fresh temporary directory: nothing carries over between runs.
  VITPRUNE_TEST_XLA_CACHE=0 turns it off.
* XLA's CPU backend at optimisation level 0: compiling dominates the suite and the tests check
  numbers and behaviour, not speed (graphs compared for exact equality are compiled with the
  same flags; parity with timm and IREE is checked to tolerances). Two full runs with the cache,
  under comparable load: 614 s of test time at level 0, 815 s at the default level.
  VITPRUNE_TEST_XLA_OPT=1 compiles as users do (the default level).
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

if os.environ.get("VITPRUNE_TEST_XLA_OPT", "0") != "1" and \
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_backend_optimization_level=0").strip()


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
