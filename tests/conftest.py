"""Shared test helpers, and how the test session compiles (set through the environment before
jax is imported, so the CLI subprocesses the tests start compile the same way).

* One persistent XLA compilation cache for the session: many tests compile the same graphs
  (vit_digits at the same schedules, in-process and in subprocesses); each distinct graph is
  compiled once. A fresh temporary directory: nothing carries over between runs.
  VITPRUNE_TEST_XLA_CACHE=0 turns it off.
* XLA's CPU backend at optimisation level 0, without the fusion emitters and on the classic
  (non-thunk) runtime: the settings that compile fastest. Compiling dominates the suite and the
  tests check numbers and behaviour, not speed (graphs compared for exact equality are compiled
  with the same flags; parity with timm and IREE is checked to tolerances). Full runs with the
  cache, idle 2-core machine: 569 s at level 0 alone, 481 s with the two further flags (and the
  digits read without importing scikit-learn). VITPRUNE_TEST_XLA_OPT=1 compiles as users do.
* Signals as under a terminal. A suite started in the background by a non-interactive shell
  (`bash .ci/run &`) inherits SIGINT ignored, under nohup SIGHUP, and so would every CLI it
  starts: the signal tests saw their CLIs shrug the signal off. The suite starts CLIs with the
  default dispositions; the test that checks an ignored SIGINT stays ignored sets it itself.
"""
import atexit
import contextlib
import importlib
import importlib.metadata
import io
import os
import shutil
import signal
import tempfile
import warnings

import pytest

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)
for _sig in (signal.SIGHUP, signal.SIGTERM):      # (nohup ignores SIGHUP)
  if signal.getsignal(_sig) is signal.SIG_IGN:
    signal.signal(_sig, signal.SIG_DFL)

if os.environ.get("VITPRUNE_TEST_XLA_CACHE", "1") != "0" and \
    "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="vitprune_test_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

# Several test processes (pytest.ini) on one GPU: none may preallocate most of its memory.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Flags that shorten XLA CPU compiles (measured on test_profile_cli + test_reduce_methods, 2-core
# CPU, jaxlib 0.10.2: 86 s at level 0 alone, 65 s with the emitter flag as well). XLA aborts on
# a flag it does not know, so that one is added only for the jaxlib releases it was measured on.
# (--xla_cpu_use_thunk_runtime=false, once beside it, is ignored by jaxlib 0.10.2, which warns
# about it at start-up: a line in the stderr of every CLI the tests run.)
_FAST_COMPILE_FLAGS = ["--xla_backend_optimization_level=0"]
try:
  if tuple(int(x) for x in importlib.metadata.version("jaxlib").split(".")[:2]) <= (0, 10):
    _FAST_COMPILE_FLAGS += ["--xla_cpu_use_fusion_emitters=false"]
except (importlib.metadata.PackageNotFoundError, ValueError):
  pass
if os.environ.get("VITPRUNE_TEST_XLA_OPT", "0") != "1" and \
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "")] +
                                     _FAST_COMPILE_FLAGS).strip()

# After the environment above is set; none of these imports jax.
from vitprune import atomic  # pylint: disable=g-import-not-at-top,wrong-import-position
from vitprune import jsonio  # pylint: disable=g-import-not-at-top,wrong-import-position
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from vitprune.records import solution as S

# The test files that take longest (summed durations, 2-core machine: edge 80 s, profile_cli 73 s,
# benchmarks_scripts 60 s, cli_smoke 54 s), run first: with one file per test process
# (pytest.ini), a long file started last would leave the other processes idle at the end.
LONGEST_FIRST = ("test_edge.py", "test_profile_cli.py", "test_benchmarks_scripts.py",
                 "test_cli_smoke.py", "test_deploy.py", "test_faults_cli.py")


# A test that blocks (a regression opening a FIFO for reading, a wait on a process that never
# ends) fails after this many seconds instead of holding CI until its own limit: the longest
# test takes well under a minute. VITPRUNE_TEST_TIMEOUT=0 turns it off (e.g. under a debugger).
TEST_TIMEOUT_S = int(os.environ.get("VITPRUNE_TEST_TIMEOUT", "300"))


@pytest.fixture(autouse=True)
def _fail_a_stuck_test(request):
  if TEST_TIMEOUT_S <= 0 or not hasattr(signal, "SIGALRM"):
    yield
    return

  # pytest.fail raises a BaseException: code under test catching OSError or Exception (a
  # TimeoutError is an OSError) cannot swallow it and let a blocked test pass.
  def stuck(signum, frame):
    pytest.fail(f"{request.node.nodeid} still running after {TEST_TIMEOUT_S} s "
                "(blocked? VITPRUNE_TEST_TIMEOUT sets the limit)")
  previous = signal.signal(signal.SIGALRM, stuck)
  signal.alarm(TEST_TIMEOUT_S)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: order within kept


def visible_params(cfg, seed=0):
  """`init_params(cfg, seed)` with every LayerScale gamma 1: timm's 1e-5 init hides what a
  reduction changes (a dropped register token moved a random model's logits by ~1e-6)."""
  import jax  # pylint: disable=g-import-not-at-top  (the environment above is set first)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  params = init_params(cfg, seed)
  if not cfg.layerscale:
    return params
  return jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.ones_like(v) if str(p[-1].key) == "gamma" else v, params)


def solution_file(path, cfg, counts, *, mode="paper", method="pomt", frontier=(),
                  settings=None, batch_size=1, weights_sha256="0" * 64, dtype="float32",
                  method_kwargs=None, platform="cpu", device_kind="cpu"):
  """Writes a genuine `Solution` record choosing `counts` (predictions are placeholders: 1 ms,
  accuracy 0.9) for `batch_size` on a profile timed in `dtype` on `platform`, estimated on
  weights `weights_sha256`; returns its path."""

  def cand(c, tokens=None):
    return S.Candidate(counts=tuple(c), schedule="list:" + ",".join(map(str, c)),
                       predicted_latency_s=1e-3, predicted_accuracy=0.9, tokens=tokens)

  settings, curve, tokens = dict(settings or {"alpha": 0.5}), None, None
  if mode == "paper":   # the paper's POMT schedule at one block, on a curve holding n and N
    reducing = [l for l in range(len(counts) - 1) if counts[l + 1] < counts[l]]
    assert len(reducing) <= 1 and counts[0] == cfg.num_tokens, "not a paper-mode schedule"
    settings.setdefault("layer", reducing[0] if reducing else 0)
    tokens = int(counts[-1])
    ns = sorted({tokens, cfg.num_tokens})
    from vitprune.solve import utility  # pylint: disable=g-import-not-at-top
    curve = {"tokens": ns, "latency_s": [1e-3 if n == tokens else 2e-3 for n in ns],
             "accuracy": [0.9 if n == tokens else 0.95 for n in ns]}
    curve["utility"] = utility(curve["latency_s"], curve["accuracy"],
                               settings.get("alpha", 0.5)).tolist()     # n: the argmax
  if mode == "multi" and tuple(counts) not in {tuple(c) for c in frontier}:
    frontier = (counts, *frontier)      # a multi choice is one the solution lists
  sol = S.Solution(
      mode=mode, config=cfg,
      profile=S.ProfileRef("p.json", "0" * 64, device_kind, platform, dtype, batch_size,
                           "measured"),
      estimate=S.EstimateRef("e.json", "0" * 64, "tokens", method, "accuracy", (None,), 1,
                             weights_sha256, None, method_kwargs),
      settings=settings, chosen=cand(counts, tokens), method=method,
      criterion="utility", full=None, frontier=tuple(cand(c) for c in frontier),
      created="2026-01-01T00:00:00+00:00", curve=curve)
  atomic.write_json(str(path), sol.to_json())
  assert jsonio.read_json(str(path), "solution")["format"] == S.FORMAT
  return str(path)


_HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                      ResourceWarning)


def lose_inventory_beside_notes(folder, is_ours, how="missing"):
  """Checks that every file `folder`'s inventory lists fits `is_ours.layout` (so one whose
  inventory is lost is still replaceable), then loses its inventory (`how`: "missing" or
  "truncated") and adds a user's NOTES.txt: `--overwrite` must now refuse to replace it."""
  listed = jsonio.read_json(os.path.join(folder, atomic.INVENTORY_FILE), "inventory")["files"]
  assert listed and all(is_ours.layout.fullmatch(rel) for rel in listed
                        if rel != atomic.INVENTORY_FILE), listed
  inventory = os.path.join(folder, atomic.INVENTORY_FILE)
  if how == "missing":
    os.remove(inventory)
  else:
    with open(inventory, "r+") as f:
      f.truncate(10)
  atomic.check_replaceable(folder, is_ours)            # still ours: its layout holds
  with open(os.path.join(folder, "NOTES.txt"), "w") as f:
    f.write("mine")


def run_cli_in_process(cwd, cli, argv):
  """-> (exit code, stdout, stderr) of `experiments.<cli>` run in this process in `cwd`: the
  CLI's own parsing, checks, one-line errors and exit codes (`common.run_in_process`), without
  a subprocess's start-up (seconds: python and jax imports)."""
  from experiments import common  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f"experiments.{cli}")
  out, err = io.StringIO(), io.StringIO()
  before = os.getcwd()
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
        warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always")
      try:
        common.run_in_process(module.main, module.define_flags, argv)
        code = 0
      except SystemExit as e:
        code = e.code
  finally:
    os.chdir(before)
  # What a process would print to stderr (Python's default filters hide these categories).
  shown = [w for w in caught if not issubclass(w.category, _HIDDEN_BY_DEFAULT)]
  return code, out.getvalue(), err.getvalue() + "".join(
      warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown)
