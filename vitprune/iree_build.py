"""Host side of edge deployment: StableHLO (`jax.export`) -> IREE modules, artifacts and kits.

    write_targets(staged_dir, cfg, params, ["iree:host", "iree:cuda:sm_87"], schedule=s, ...)
    build_kit("kits/digits", cfg, params, target="iree:host", grid=(65, 61, 57), jobs=2)

The function compiled is `jax.export` of `vitprune.model.forward` lowered for 'cpu' (plain
StableHLO, no XLA custom calls), compiled by `iree.compiler.compile_str(input_type="stablehlo")`
with the target's flags (`vitprune.edge.targets`). The module's `main` takes the float32 weight
leaves (in `jax.tree` order, unused leaves dropped) then the images, so one `weights.bin` serves
every target of an artifact and every module of a kit (weights "args"); `weights="baked"` instead
closes over the parameters, embedding them as constants in each module.

IREE workarounds, applied only while lowering for IREE:
  * stable sorts: IREE ignores `is_stable`; a stable sort is lowered as an unstable sort with an
    extra iota key (ties broken by position = stable), the other operands gathered by the
    resulting permutation. ToMe's `argsort(stable=True)` needs it.
  * graphs that ask `vitprune.lowering.for_iree()` while traced: ToMe's matching (see
    `reduce/tome.py`) avoids forms IREE's data tiling cannot compile.
  * a CPU compile that fails is retried as `vitprune.edge.targets.next_attempt` says (a stack
    limit up to 64 KiB; without the matmul generalization; without data tiling / microkernels,
    e.g. where IREE 3.13 cannot pad an i1 tensor); the record lists the flags actually used and
    what was given up in `compiler.fallback`.
CPU modules are compiled for the latency or throughput profile and run on its driver
(`choose_runtime`: from the unpruned model's estimated work, or from a driver given); records and
kits store the choice under `runtime`.
Compiled modules can be cached by sha256(IREE version + backend + flags + MLIR text without
source locations); a cache file holds its key and the module's sha256, and one that does not
match (renamed, copied over another, damaged) is recompiled and replaced, never served.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import signal
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
from jax._src.interpreters import mlir as jax_mlir  # private: jax's default sort lowering
from jax.interpreters import mlir
import jax.numpy as jnp
import numpy as np

from vitprune import atomic
from vitprune import lowering
from vitprune import model
from vitprune import parallel
from vitprune.config import ViTConfig
from vitprune.digest import named_leaves_sha256, params_sha256
from vitprune.edge import runtime as edge_rt
from vitprune.edge.kit import KIT_FORMAT, KIT_MANIFEST, KIT_VERSION, point_identity
from vitprune.edge.targets import (CPU_DRIVERS, EdgeError, Target, check_driver, cpu_plan,
                                   default_driver, host_cpu, next_attempt, parse_targets,
                                   usable_cores)
from vitprune.flops import forward_gflop
from vitprune.schedule import Schedule, check_schedule, format_schedule, reduces_tokens

KIT_WEIGHTS = "weights.bin"
# `build_kit(overwrite=True)` replaces only a kit (its kit.json; its layout, for one whose
# inventory is lost: `atomic.DIRECTORY_LAYOUTS`).
is_kit = atomic.json_marker(KIT_MANIFEST, KIT_FORMAT)


class IreeBuildError(EdgeError):
  """IREE compilation failed or the request cannot be compiled."""


# ----------------------------------------------------------------------------- lowering


_installed: List[bool] = []


def _install_sort_rule() -> None:
  """Registers (once) a cpu lowering of `sort` that, only inside `iree_lowering()`, makes
  stable sorts explicit; outside it delegates to jax's own rule (identical output)."""
  if _installed:
    return
  default = jax_mlir._lowerings[jax.lax.sort_p].rule  # pylint: disable=protected-access

  def rule(ctx, *operands, dimension, is_stable, num_keys):
    if not (is_stable and lowering.for_iree()):
      return default(ctx, *operands, dimension=dimension, is_stable=is_stable,
                     num_keys=num_keys)

    def explicit(*ops):
      iota = jax.lax.broadcasted_iota(np.int32, ops[0].shape, dimension)
      out = jax.lax.sort((*ops[:num_keys], iota), dimension=dimension, is_stable=False,
                         num_keys=num_keys + 1)
      return list(out[:num_keys]) + [jnp.take_along_axis(o, out[-1], axis=dimension)
                                     for o in ops[num_keys:]]
    return mlir.lower_fun(explicit, multiple_results=True)(ctx, *operands)

  mlir.register_lowering(jax.lax.sort_p, rule, platform="cpu")
  _installed.append(True)


@contextlib.contextmanager
def iree_lowering():
  """Lowering for IREE inside the block. jax caches lowered inner jits across exports, so the
  caches are cleared on entry and exit: nothing lowered outside leaks in, or vice versa."""
  _install_sort_rule()
  jax.clear_caches()
  token = lowering.IREE.set(True)
  try:
    yield
  finally:
    lowering.IREE.reset(token)
    jax.clear_caches()


@dataclasses.dataclass
class Lowered:
  """StableHLO text of one forward and what its `main` takes besides the images."""
  mlir: str
  weight_names: Tuple[str, ...]      # () when baked
  weight_index: Tuple[int, ...]      # indices into the flattened parameter leaves
  input_shape: Tuple[int, ...]
  output_shape: Tuple[int, ...]


def lower(cfg: ViTConfig, params, *, schedule=None, reducer=None, dtype: str = "float32",
          precision: str = "highest", batch_size: int = 1, weights: str = "args") -> Lowered:
  """`jax.export` (platform cpu) of the forward -> StableHLO text for IREE."""
  if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
    raise IreeBuildError(f"IREE targets need a fixed batch size >= 1, got {batch_size!r} "
                         "(drop --symbolic_batch)")
  if weights not in ("args", "baked"):
    raise IreeBuildError(f"weights must be 'args' or 'baked', got {weights!r}")
  fn = functools.partial(model.forward, cfg=cfg, schedule=schedule, reducer=reducer,
                         dtype=dtype, precision=precision)
  images = jax.ShapeDtypeStruct((batch_size, cfg.img_size, cfg.img_size, cfg.in_chans),
                                jnp.float32)
  leaves = jax.tree.flatten_with_path(params)[0]
  with iree_lowering():
    if weights == "args":
      exported = jax.export.export(jax.jit(fn), platforms=("cpu",))(
          model.abstract_params(cfg), images)
    else:
      consts = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
      exported = jax.export.export(jax.jit(lambda x: fn(consts, x)), platforms=("cpu",))(images)
  kept = tuple(int(i) for i in exported.module_kept_var_idx)
  if weights == "args":
    if kept[-1] != len(leaves):
      raise IreeBuildError("the exported forward dropped its images argument")
    index = kept[:-1]
  else:
    index = ()
  return Lowered(mlir=exported.mlir_module(),
                 weight_names=tuple(jax.tree_util.keystr(leaves[i][0]) for i in index),
                 weight_index=index, input_shape=tuple(images.shape),
                 output_shape=tuple(int(d) for d in exported.out_avals[0].shape))


# ----------------------------------------------------------------------------- compile


def rename_main(mlir: str, name: str) -> str:
  """`mlir` (a `jax.export` module) with its public function `main` renamed `name`."""
  head = "func.func public @main("
  if mlir.count(head) != 1:
    raise IreeBuildError(f"expected one '{head}' in the exported module, found "
                         f"{mlir.count(head)}")
  return mlir.replace(head, f"func.func public @{name}(")


def iree_version() -> str:
  try:
    from iree.compiler import version  # pylint: disable=g-import-not-at-top  (optional install)
    return str(version.VERSION)
  except ImportError:
    raise IreeBuildError("iree-base-compiler is not installed (pip install "
                         "'iree-base-compiler>=3.13,<4')") from None


def strip_locations(mlir: str) -> str:
  """MLIR text without source locations (they name the Python call site, not the program)."""
  return "\n".join(re.sub(r" loc\(.*$", "", line) for line in mlir.splitlines()
                   if not line.startswith("#loc"))


def _first_error(e: Exception) -> str:
  """The line of an `iree-compile` failure that says what went wrong: an unknown CPU name, else
  the first 'error:' line, else the first line of its diagnostics ('createTargetMachine(foo-...)
  failed'), else its first line ('Error invoking IREE compiler tool iree-compile' named none)."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  if not lines:
    return type(e).__name__
  diagnostics = lines[lines.index("Diagnostics:") + 1:] if "Diagnostics:" in lines else []
  for wanted in (lambda l: "is not a recognized processor" in l,
                 lambda l: "error:" in l.lower() and not l.startswith("LLVM ERROR"),
                 lambda l: l in diagnostics[:1], lambda l: "error:" in l.lower()):
    found = [l for l in lines if wanted(l)]
    if found:
      return found[0][:400]
  return lines[0][:400]


_log = logging.getLogger(__name__)
_CACHE_MAGIC = b"vitprune-iree-cache-v1\n"


def _cache_entry(key: str, blob: bytes) -> bytes:
  """A cache file: magic, the key it was stored under and the module's sha256, then the module,
  so that a file renamed, copied over another or damaged is never served as a module."""
  return (_CACHE_MAGIC + key.encode() + b"\n" + hashlib.sha256(blob).hexdigest().encode()
          + b"\n" + blob)


def _read_cache_entry(path: str, key: str) -> Optional[bytes]:
  """-> the module stored in `path` for `key`, or None if the file is not one (absent, another
  key's, an older format, truncated or damaged): the caller recompiles and replaces it."""
  if not os.path.isfile(path):
    return None
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:              # unreadable: recompiled (and the store below says why it fails)
    return None
  head = _CACHE_MAGIC + key.encode() + b"\n"
  if not data.startswith(head):
    return None
  digest, sep, blob = data[len(head):].partition(b"\n")
  if not sep or digest != hashlib.sha256(blob).hexdigest().encode():
    return None
  return blob


def _compile_once(ireec, mlir: str, backends: List[str], flags: List[str], version: str,
                  cache_dir: Optional[str]) -> Tuple[bytes, bool, str]:
  """-> (vmfb, cached, cache key); raises ireec.CompilerToolError."""
  # "target-cpu=host" means this machine's CPU: key it by the CPU, not by the word "host", so a
  # cache shared between machines never serves a module built for another CPU.
  host = ([host_cpu()] if any(f.endswith("target-cpu=host") for f in flags)
          else [])
  key = hashlib.sha256(json.dumps([version, backends, flags] + host).encode() +
                       strip_locations(mlir).encode()).hexdigest()
  cached = os.path.join(cache_dir, key[:2], key + ".module") if cache_dir else None
  blob = _read_cache_entry(cached, key) if cached else None
  if blob is not None:
    return blob, True, key
  blob = ireec.compile_str(mlir, input_type="stablehlo", target_backends=backends,
                           extra_args=flags)
  if cached:
    try:
      atomic.write_bytes(cached, _cache_entry(key, blob))
      legacy = cached[:-len(".module")] + ".vmfb"    # this key's entry before the header
      if os.path.isfile(legacy) and not os.path.islink(legacy):
        os.unlink(legacy)
    except OSError as e:   # a damaged cache (a file where its folder goes, a folder at the
      # entry, no space): the module is good, only not cached
      _log.warning("IREE compile cache: could not store %s (%s); continuing uncached",
                   cached, e.strerror or e)
  return blob, False, key


def compile_module(mlir: str, target: Target, *, profile: str = "throughput",
                   cache_dir: Optional[str] = None) -> Tuple[bytes, Dict[str, Any]]:
  """-> (vmfb bytes, {flags, profile, iree_version, compile_s, cached, fallback,
  target_backends, cache_key}). A failed CPU compile is retried as `next_attempt` says; the
  flags actually used and what was given up (`fallback`, None if nothing) are returned;
  compile_s is the wall time to get the module, failed attempts included (`cached`: reading it
  from `cache_dir`, as a JAX profile's compile_s is a persistent-cache hit's; it said 0.0)."""
  import iree.compiler as ireec  # pylint: disable=g-import-not-at-top  (optional install)
  version = iree_version()
  flags, backends, given_up = target.compile_flags(profile), [target.backend], []
  t0 = time.perf_counter()
  while True:
    try:
      blob, cached, key = _compile_once(ireec, mlir, backends, flags, version, cache_dir)
      break
    except ireec.CompilerToolError as e:
      # Stopped (`stop_compilers`, Ctrl-C): a retry with fewer flags ran on after the stop.
      # (A crash, SIGSEGV, is what the fallback is for: IREE 3.13 dies on some flag sets.)
      code = re.search(r"Error code: (-?\d+)", str(e))
      if code and -int(code.group(1)) in (signal.SIGTERM, signal.SIGINT):
        raise IreeBuildError(f"IREE compile for {target.text} was stopped (signal "
                             f"{-int(code.group(1))})") from None
      first = _first_error(e)
      step = next_attempt(flags, str(e)) if target.backend == "llvm-cpu" else None
      if step is None:
        raise IreeBuildError(f"IREE could not compile for {target.text}: {first}") from None
      flags = step[0]
      given_up.append(f"{step[1]} after: {first}")
  return blob, {"iree_version": version, "input_type": "stablehlo", "target_backends": backends,
                "flags": flags, "profile": profile if target.backend == "llvm-cpu" else None,
                "fallback": "; ".join(given_up) or None, "cache_key": key,
                "compile_s": time.perf_counter() - t0, "cached": cached}


def compile_many(jobs: Dict[Any, Tuple[Any, ...]], *, threads: int = 2,
                 profile: str = "throughput", cache_dir: Optional[str] = None,
                 on_done: Optional[Callable[[Any, Dict[str, Any]], None]] = None
                 ) -> Dict[Any, Tuple[bytes, Dict[str, Any]]]:
  """Compiles `{key: (mlir, target[, profile])}` for CPU `profile` (or the job's own),
  `threads` at a time (each compile is an `iree-compile` process, so threads overlap)
  -> {key: (bytes, info)}."""
  if threads < 1:
    raise IreeBuildError(f"threads must be >= 1, got {threads}")
  done = (lambda key, result: on_done(key, result[1])) if on_done else None
  try:
    return parallel.run_jobs(
        {k: functools.partial(compile_module, job[0], job[1],
                              profile=job[2] if len(job) > 2 else profile, cache_dir=cache_dir)
         for k, job in jobs.items()}, threads, done)
  except BaseException:      # a failure, Ctrl-C or SIGTERM: the running compiles go too
    stop_compilers()
    raise


def stop_compilers(name: str = "iree-compile") -> List[int]:
  """Sends SIGTERM to this process's child processes called `name` (Linux /proc; elsewhere
  none) -> their pids. `run_jobs` does not wait for running compiles, and each is a process:
  a build stopped by SIGTERM left them running for minutes after it had exited."""
  me, stopped = os.getpid(), []
  try:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
  except OSError:
    return stopped
  for pid in pids:
    try:
      with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read().decode("utf-8", "replace")
      comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
      if comm == name[:15] and int(rest.split()[1]) == me:     # (comm: 15 characters at most)
        os.kill(pid, signal.SIGTERM)
        stopped.append(pid)
    except (OSError, ValueError, IndexError):       # (gone meanwhile, or not ours to stop)
      continue
  return stopped


# ----------------------------------------------------------------------------- artifacts


def iree_targets(targets: Optional[Sequence[str]]) -> Tuple[Target, ...]:
  """The IREE targets among `targets` (texts or Targets; None -> none)."""
  texts = [t.text if isinstance(t, Target) else str(t) for t in targets or ()]
  return tuple(t for t in parse_targets(texts) if t.is_iree) if texts else ()


def choose_runtime(cfg: ViTConfig, batch_size: int, target: Target,
                   driver: Optional[str] = None, cores: Optional[int] = None) -> Dict[str, Any]:
  """{profile, driver, gflop, shards, source} for `target`'s modules of `cfg` at `batch_size`:
  a CPU driver given (`driver`, checked) sets its profile, one shard; otherwise profile and
  shards follow the unpruned model's estimated work (`cpu_plan`) on `cores` (default: this
  machine's for iree:host, 1 for a cross-compiled CPU, whose board is unknown here) and the
  driver the profile. Non-CPU targets ignore `driver` and run on their own, unsharded."""
  gflop = forward_gflop(cfg, batch_size)
  if target.backend != "llvm-cpu":
    return {"profile": None, "driver": target.driver, "gflop": round(gflop, 3), "shards": 1,
            "source": "auto"}
  if driver is None:
    if cores is None:
      cores = usable_cores() if target.cpu == "host" else 1
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
      raise IreeBuildError(f"CPU cores must be an integer >= 1, got {cores!r}")
    profile, shards = cpu_plan(gflop, batch_size, cores)
  else:
    profile, shards = {v: k for k, v in CPU_DRIVERS.items()}[check_driver(target, driver)], 1
  return {"profile": profile, "driver": default_driver(target, profile),
          "gflop": round(gflop, 3), "shards": shards,
          "source": "auto" if driver is None else "given"}


def _leaves32(params) -> List[np.ndarray]:
  return [np.asarray(a, np.float32) for a in jax.tree.leaves(params)]


def _host_record(target: Target) -> Dict[str, Any]:
  return {"host_cpu": host_cpu()} if target.cpu == "host" else {}


def write_targets(tmp: str, cfg: ViTConfig, params, targets: Sequence[Any], *, schedule=None,
                  reducer=None, dtype: str = "float32", precision: str = "highest",
                  batch_size: Optional[int] = 1, class_names=None, weights: str = "args",
                  threads: int = 2, cache_dir: Optional[str] = None,
                  driver: Optional[str] = None, cores: Optional[int] = None,
                  reducer_entry: Optional[Dict[str, Any]] = None,
                  source_sha256: Optional[str] = None,
                  training: Optional[Dict[str, Any]] = None) -> List[str]:
  """Compiles the IREE `targets` into the (staged) artifact directory `tmp`; writes
  `iree/<slug>.vmfb`, `iree/<slug>.json` and `iree/weights.bin`. `driver`, `cores`: the CPU
  targets' runtime driver and core count (default: as `choose_runtime` says);
  `reducer_entry`: the manifest's description of `reducer` (name, options, fields), recorded
  so that a module of another reducer is told apart; `source_sha256`: the manifest's
  weights.source_sha256, recorded so that a manifest stripped of it is told apart on the
  board; `training`: what the weights' source says of their training data (`train_digits`:
  dataset and split), recorded so that a board holding `iree/` without the manifest still
  refuses their training images (part of the module's identity: an edit is told apart).
  Returns the target texts (with 'jax'
  first: the jax export is always part of an artifact)."""
  chosen = iree_targets(targets)
  if not chosen:
    return ["jax"]
  if reducer is not None and reducer_entry is None:
    raise ValueError("write_targets needs reducer_entry (the manifest's description of the "
                     "reducer) with a reducer: the records must name it")
  plans = {t: choose_runtime(cfg, batch_size or 1, t, driver, cores) for t in chosen}
  module_batch = {t: batch_size if p["shards"] == 1 else batch_size // p["shards"]
                  for t, p in plans.items()}     # None (symbolic) is refused by `lower`
  lows = {}
  for b in module_batch.values():
    if b not in lows:
      lows[b] = lower(cfg, params, schedule=schedule, reducer=reducer, dtype=dtype,
                      precision=precision, batch_size=b, weights=weights)
  low = next(iter(lows.values()))          # weight leaves and names do not depend on the batch
  os.makedirs(os.path.join(tmp, edge_rt.EDGE_DIR), exist_ok=True)
  wentry: Dict[str, Any] = {"mode": weights, "params_sha256": params_sha256(params)}
  if source_sha256 is not None:
    wentry["source_sha256"] = source_sha256
  if training is not None:
    wentry["training"] = training
  if weights == "args":
    leaves = _leaves32(params)
    blob, entries = edge_rt.pack_weights([leaves[i] for i in low.weight_index],
                                         low.weight_names)
    with open(os.path.join(tmp, *edge_rt.WEIGHTS_FILE.split("/")), "wb") as f:
      f.write(blob)
    wentry.update(file=edge_rt.WEIGHTS_FILE, sha256=hashlib.sha256(blob).hexdigest(),
                  bytes=len(blob), leaves=entries)
  records = {t: {
      "format": edge_rt.RECORD_FORMAT, "version": edge_rt.RECORD_VERSION,
      "target": t.text, "backend": t.backend, "driver": plans[t]["driver"],
      "runtime": plans[t],
      "module": {"file": f"{edge_rt.EDGE_DIR}/{t.slug}.vmfb", "batch_size": module_batch[t]},
      "weights": wentry,
      "input": {"shape": [batch_size] + list(low.input_shape[1:]), "dtype": "float32",
                "layout": "NHWC"},
      "output": {"shape": [batch_size] + list(low.output_shape[1:]), "dtype": "float32",
                 "kind": "logits" if cfg.num_classes else "features"},
      "model": cfg.name,
      "schedule": None if schedule is None else format_schedule(schedule, cfg),
      "reducer": reducer_entry,
      "compute": {"dtype": dtype, "precision": precision},
      "preprocessing": dataclasses.asdict(cfg.preprocessing),
      "class_names": None if class_names is None else list(class_names),
      **_host_record(t)} for t in chosen}
  for record in records.values():    # the module's function is named after the record
    record["function"] = edge_rt.function_name(edge_rt.record_identity(record))
  compiled = compile_many({t: (rename_main(lows[module_batch[t]].mlir, records[t]["function"]),
                               t, plans[t]["profile"] or "throughput") for t in chosen},
                          threads=threads, cache_dir=cache_dir)
  for t in chosen:
    blob, info = compiled[t]
    record = records[t]
    rel = record["module"]["file"]
    with open(os.path.join(tmp, *rel.split("/")), "wb") as f:
      f.write(blob)
    record["module"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    record.update(compiler={k: v for k, v in info.items() if k not in ("compile_s", "cached")},
                  compile_s=info["compile_s"])
    atomic.write_json(os.path.join(tmp, edge_rt.EDGE_DIR, t.slug + ".json"), record,
                      sort_keys=True)
  return ["jax"] + [t.text for t in chosen]


# ----------------------------------------------------------------------------- kits


def kit_jobs(cfg: ViTConfig, *, mode: str, grid: Sequence[int] = (), schedules=(),
             batch_sizes: Sequence[int] = (1,), reducer=None) -> List[Dict[str, Any]]:
  """The kit's points: mode 'model' -> one per (batch, n) with tokens dropped after the
  embedding; 'schedule' -> one per (batch, schedule)."""
  if mode not in ("model", "schedule"):
    raise IreeBuildError(f"kit mode must be 'model' or 'schedule', got {mode!r}")
  if mode == "model" and not grid:
    raise IreeBuildError("mode model needs token counts (--tokens)")
  if mode == "schedule" and not schedules:
    raise IreeBuildError("mode schedule needs schedules (--schedules)")
  jobs = []
  for b in batch_sizes:
    if mode == "model":
      for n in grid:
        s = Schedule((int(n),) * (cfg.depth + 1))
        jobs.append({"component": "model", "batch_size": int(b), "tokens": int(n),
                     "schedule": None, "counts": s,
                     "reducer": reducer if n < cfg.num_tokens else None})
    else:
      for s in schedules:
        s = check_schedule(cfg, s, reducer)
        jobs.append({"component": "schedule", "batch_size": int(b), "tokens": s.counts[0],
                     "schedule": list(s.counts), "counts": s,
                     "reducer": reducer if reduces_tokens(cfg, s) else None})
  return jobs


def build_kit(out: str, cfg: ViTConfig, params, *, target: str, mode: str = "model",
              grid: Sequence[int] = (), schedules=(), batch_sizes: Sequence[int] = (1,),
              reducer=None, reducer_name: str = "random", dtype: str = "float32",
              threads: int = 2, cache_dir: Optional[str] = None, overwrite: bool = False,
              on_done: Optional[Callable[[Any, Dict[str, Any]], None]] = None,
              driver: Optional[str] = None, cores: Optional[int] = None) -> str:
  """Compiles one module per kit point for one IREE target into directory `out` (atomic).
  Each batch size gets the runtime plan an artifact at that batch size gets (`choose_runtime`:
  profile, driver, shards; recorded per point), so a profile measures the modules the way such
  an artifact runs them; the kit-level `runtime` is the plan at the largest batch size. With
  `overwrite` it replaces the kit there when this call began, not one another run published
  meanwhile (`atomic.ReplacedMeanwhileError`). `on_done(point, info)` after each module: the
  kit point compiled (its manifest entry) and `compile_many`'s info."""
  (t,) = parse_targets([target])
  if not t.is_iree:
    raise IreeBuildError(f"a kit needs an IREE target, got {target!r}")
  plans = {int(b): choose_runtime(cfg, int(b), t, driver, cores) for b in batch_sizes}
  plan = plans[max(plans)]
  out = os.path.abspath(out)
  atomic.check_output_dir_target(out, overwrite, is_kit, "pass --overwrite")   # before compiling
  began = atomic.output_stamp(out)     # (not one made since: replaced, or this one kept)
  jobs = kit_jobs(cfg, mode=mode, grid=grid, schedules=schedules, batch_sizes=batch_sizes,
                  reducer=reducer)
  precision = "highest" if dtype == "float32" else "default"
  point_plans = [plans[j["batch_size"]] for j in jobs]
  lowered = [lower(cfg, params, schedule=j["counts"], reducer=j["reducer"], dtype=dtype,
                   precision=precision, batch_size=j["batch_size"] // p["shards"])
             for j, p in zip(jobs, point_plans)]
  leaves = _leaves32(params)
  names = [jax.tree_util.keystr(k) for k, _ in jax.tree.flatten_with_path(params)[0]]
  blob, entries = edge_rt.pack_weights(leaves, names)
  manifest = {
      "format": KIT_FORMAT, "version": KIT_VERSION,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
      "target": t.text, "backend": t.backend, "driver": plan["driver"], "runtime": plan,
      "model": cfg.name, "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
      "dtype": dtype, "mode": mode, "reducer": reducer_name,
      "weights": {"file": KIT_WEIGHTS, "sha256": hashlib.sha256(blob).hexdigest(),
                  # (of the float32 leaves the kit holds: a board checks the packing by it)
                  "params_sha256": named_leaves_sha256(zip(names, leaves)), "leaves": entries},
      "points": [], **_host_record(t)}
  for job, low, p in zip(jobs, lowered, point_plans):
    sched = "" if job["schedule"] is None else "_s" + hashlib.sha256(
        json.dumps(job["schedule"]).encode()).hexdigest()[:10]
    point = {"component": job["component"], "batch_size": job["batch_size"],
             "tokens": job["tokens"], "schedule": job["schedule"],
             "module": {"file": f"modules/{job['component']}_b{job['batch_size']}"
                                f"_n{job['tokens']}{sched}.vmfb",
                        "batch_size": int(low.input_shape[0])},
             "args": list(low.weight_index), "runtime": p,
             "input": {"shape": [job["batch_size"]] + list(low.input_shape[1:]),
                       "dtype": "float32"}}
    point["function"] = edge_rt.function_name(point_identity(manifest, point))
    manifest["points"].append(point)
  compiled = compile_many({i: (rename_main(low.mlir, point["function"]), t,
                               p["profile"] or "throughput")
                           for i, (low, p, point) in enumerate(zip(lowered, point_plans,
                                                                   manifest["points"]))},
                          threads=threads, cache_dir=cache_dir,
                          on_done=on_done and (lambda i, info: on_done(manifest["points"][i],
                                                                       info)))
  with atomic.staged_dir(out, overwrite=overwrite, is_ours=is_kit, replaces=began) as tmp:
    with open(os.path.join(tmp, KIT_WEIGHTS), "wb") as f:
      f.write(blob)
    os.makedirs(os.path.join(tmp, "modules"))
    for i, point in enumerate(manifest["points"]):
      vmfb, info = compiled[i]
      with open(os.path.join(tmp, *point["module"]["file"].split("/")), "wb") as f:
        f.write(vmfb)
      point["module"]["sha256"] = hashlib.sha256(vmfb).hexdigest()
      point.update(compile_s=info["compile_s"], cached=info["cached"], flags=info["flags"],
                   fallback=info["fallback"])
    flags = compiled[[j["batch_size"] for j in jobs].index(max(plans))][1]   # the kit's plan
    manifest["compiler"] = {k: flags[k] for k in ("iree_version", "input_type",
                                                  "target_backends", "flags", "profile")}
    atomic.write_json(os.path.join(tmp, KIT_MANIFEST), manifest, sort_keys=True)
  return out
