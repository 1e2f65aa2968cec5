"""On-device latency profiles from a kit of IREE modules (no jax on the board).

A kit (built on the host by `python -m experiments.edge_kit`, `vitprune.iree_build.build_kit`):
  kit.json      format "vitprune-edge-kit", version 1: target, backend, driver, runtime
                {profile, driver, gflop, shards, source}, compiler {iree_version, input_type,
                target_backends, flags, profile}, host_cpu (iree:host), model, config, dtype,
                mode ('model' | 'schedule'), reducer, weights {file, sha256, params_sha256,
                leaves}, points [{component, batch_size, tokens, schedule, module {file,
                sha256}, args (weight leaf indices), runtime (the plan of an artifact at the
                point's batch size: {profile, driver, gflop, shards, source}; the module takes
                [batch / shards, ...]), input {shape, dtype}, compile_s, cached, flags,
                fallback}].
  weights.bin   every float32 parameter leaf (see `vitprune.edge.runtime.pack_weights`).
  modules/*.vmfb  one module per point: <function>(*weights[args], images) -> logits (the
                point's `function`: 'main_' + a digest of `point_identity`; 'main' before).

`profile_kit` times every point with the profiler's protocol (`vitprune.profile.protocol`) on
its plan's driver and shards (or on the driver given) and returns a
`vitprune.profile.records.Profile` (platform 'iree-<driver>', device kind naming the target and
the CPU), which `write_profile` saves as the JSON (+ CSV twin) `experiments.solve` reads.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import os
import reprlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vitprune import atomic
from vitprune import console
from vitprune import jsonio
from vitprune.digest import named_leaves_sha256
from vitprune.profile import protocol
from vitprune.profile import records
from vitprune.edge import runtime as rt
from vitprune.edge.targets import (EdgeError, check_driver, check_runnable, host_cpu,
                                    parse_target, profile_flags_problem)

KIT_FORMAT = "vitprune-edge-kit"
KIT_VERSION = 1
KIT_MANIFEST = "kit.json"


def point_identity(kit: Dict[str, Any], point: Dict[str, Any]) -> Dict[str, Any]:
  """What a kit point's module computes and what its timing will be recorded as: the fields its
  function name is derived from (`runtime.function_name`), the kit's model, config, dtype and
  reducer included, so an edited label (batch size, tokens, model) is refused. Not the weights:
  they do not change a timing, and the compile cache then serves kits of other weights."""
  return {**{k: kit.get(k) for k in ("target", "model", "config", "dtype", "mode", "reducer")},
          **{k: point.get(k) for k in ("component", "batch_size", "tokens", "schedule", "input",
                                       "args")},
          "shards": (point.get("runtime") or {}).get("shards", point.get("shards", 1)),
          "module_batch": (point.get("module") or {}).get("batch_size")}


def read_kit(path: str) -> Dict[str, Any]:
  """The validated kit manifest of directory `path` (EdgeError when invalid)."""
  if not os.path.isdir(path):
    raise EdgeError(f"{path} is not a kit directory{atomic.moved_aside_note(path)}")
  if (not os.path.lexists(os.path.join(path, KIT_MANIFEST))
      and rt.record_files(os.path.join(path, rt.EDGE_DIR))):   # (said "kit.json is missing")
    raise EdgeError(f"{path} is an artifact ({rt.EDGE_DIR}/*.json), not a profiling kit: run it "
                    f"with python -m vitprune.edge run|bench --artifact={path}; build a kit with "
                    "python -m experiments.edge_kit")
  doc = rt.read_json(os.path.join(path, KIT_MANIFEST), "kit")
  if doc.get("format") != KIT_FORMAT or doc.get("version") != KIT_VERSION:
    raise EdgeError(f"{path}/{KIT_MANIFEST}: not a {KIT_FORMAT} version {KIT_VERSION} manifest")
  missing = [k for k in ("target", "driver", "model", "config", "dtype", "mode", "weights",
                         "points") if k not in doc]
  if missing:
    raise EdgeError(f"{path}/{KIT_MANIFEST} lacks {missing}")
  if not isinstance(doc["points"], list) or not doc["points"]:
    raise EdgeError(f"{path}/{KIT_MANIFEST} lists no points")
  seen: Dict[Any, int] = {}
  for i, p in enumerate(doc["points"]):
    bad = _bad_point(p)
    if bad:
      raise EdgeError(f"{path}/{KIT_MANIFEST}: points[{i}]: {bad}")
    key = json.dumps([p["component"], p["batch_size"], p["tokens"], p.get("schedule")])
    if key in seen:     # refused before timing, not after it (a profile holds one per point)
      raise EdgeError(f"{path}/{KIT_MANIFEST}: points[{i}] repeats points[{seen[key]}] "
                      f"({p['component']}, batch {p['batch_size']}, {p['tokens']} tokens)")
    seen[key] = i
  # A module no point names: its point was deleted from kit.json (the profile came out a point
  # short without a word). Only the kit's own kind of file counts (a copy's .DS_Store does not).
  named = {p["module"]["file"] for p in doc["points"]}
  modules = os.path.join(path, "modules")
  orphans = sorted(f"modules/{n}" for n in (os.listdir(modules) if os.path.isdir(modules)
                                            else ())
                   if n.endswith(".vmfb") and not n.startswith(".")
                   and f"modules/{n}" not in named)
  if orphans:
    raise EdgeError(f"{path}/{KIT_MANIFEST} names no point for {orphans[0]}"
                    f"{f' and {len(orphans) - 1} more' if len(orphans) > 1 else ''}: an edited "
                    "kit.json? rebuild it with experiments.edge_kit")
  # The board profile records the kit's compiler entry and merges only profiles of the same one:
  # its flags are those its points were compiled with (an edit got past that guard).
  compiler, flags = doc.get("compiler"), [p["flags"] for p in doc["points"] if "flags" in p]
  if compiler is not None and (not isinstance(compiler, dict) or
                               (flags and compiler.get("flags") not in flags)):
    raise EdgeError(f"{path}/{KIT_MANIFEST}: compiler.flags are none of its points' flags: an "
                    "edited kit.json? rebuild it with experiments.edge_kit")
  return doc


def _bad_point(p: Any) -> Optional[str]:
  """What is malformed in a kit point's fields the profile reads (None: nothing)."""
  if not isinstance(p, dict):
    return "must be an object"
  ints = lambda v: isinstance(v, list) and all(jsonio.is_int(x) and x >= 0 for x in v)
  shape = p.get("input", {}).get("shape") if isinstance(p.get("input"), dict) else None
  checks = (("input.shape", ints(shape) and len(shape) == 4 and shape[0] >= 1,
             "4 ints >= 0, the batch >= 1"),
            ("args", ints(p.get("args")), "a list of ints >= 0"),
            ("compile_s", jsonio.is_num(p.get("compile_s")) and p.get("compile_s") >= 0,
             "a number >= 0"),
            ("component", isinstance(p.get("component"), str), "a string"),
            ("batch_size", jsonio.is_int(p.get("batch_size")) and p.get("batch_size") >= 1,
             "an int >= 1"),
            ("tokens", jsonio.is_int(p.get("tokens")) and p.get("tokens") >= 1, "an int >= 1"),
            ("schedule", "schedule" in p and (p["schedule"] is None or (
                ints(p["schedule"]) and p["schedule"] and min(p["schedule"]) >= 1)),
             "null (one count) or a list of the counts entering each block, each >= 1"),
            ("module", isinstance(p.get("module"), dict)
             and isinstance(p["module"].get("file"), str), "an object naming its file"))
  # (a compile_s of -5 was 'missing or of the wrong type': say what each field must be)
  wrong = [f"{name} must be {want}" for name, ok, want in checks if not ok]
  return "; ".join(wrong) if wrong else None


def point_label(component: str, batch_size: int, tokens: int,
                schedule: Optional[Sequence[int]]) -> str:
  """'model b1 n65', or 'schedule b1 65,57,49,...' (schedules entering with one count differ)."""
  what = f"n{tokens}" if schedule is None else ",".join(map(str, schedule))
  return f"{component} b{batch_size} {what}"


def _kit_plans(path: str, driver: Optional[str], flag: Optional[str] = None):
  """Kit `path` read and checked -> (kit manifest with the driver(s) used joined by '+',
  [(driver, shards)] and [function name] per point): each point's own runtime plan (kits made
  before per-point plans: the kit's driver, one shard), or `driver` for every point. `flag`
  ('--kit'): named by a refusal of the kit's manifest (`profile_kit`)."""
  with console.input_flag(flag, path):
    kit = read_kit(path)
  target = parse_target(kit["target"])
  # (an edited 'cuda' on a CPU kit dropped the CPU from the board profile's device)
  if kit.get("backend", target.backend) != target.backend:
    raise EdgeError(f"kit {path}: backend {kit.get('backend')!r} is not the {target.text} "
                    f"target's {target.backend!r}: an edited kit.json? rebuild it with "
                    "experiments.edge_kit")
  compiler = kit.get("compiler") or {}
  problem = profile_flags_problem(compiler.get("profile"), compiler.get("flags"))
  if problem:
    raise EdgeError(f"kit {path}: compiler: {problem}: an edited kit.json? rebuild it with "
                    "experiments.edge_kit")
  plans, functions = [], []
  for p in kit["points"]:
    where = f"kit {path} ({p.get('module', {}).get('file')})"
    plan = p.get("runtime") or {"driver": kit["driver"], "shards": p.get("shards", 1)}
    problem = profile_flags_problem(plan.get("profile", compiler.get("profile")),
                                    p.get("flags", compiler.get("flags")))
    if problem:
      raise EdgeError(f"{where}: {problem}: an edited kit.json? rebuild it with "
                      "experiments.edge_kit")
    try:          # (a --driver given is the flag's problem; else the kit's, edited)
      runs_on = check_driver(target, driver or plan.get("driver"))
    except EdgeError as e:
      raise (e if driver else EdgeError(f"{where}: {e} (an edited kit.json?)")) from None
    plans.append((runs_on, rt.check_shards(plan.get("shards"), int(p["input"]["shape"][0]),
                                           where, p["module"])))
    functions.append(rt.checked_function(p, point_identity(kit, p), where))
  drivers = sorted({d for d, _ in plans})
  kit["driver"] = "+".join(drivers)
  shards: Dict[str, List[int]] = {}      # per batch size: the board profile's merge keys too
  profiles: Dict[str, List[str]] = {}    # (the compile profile: latency or throughput flags)
  batch_drivers: Dict[str, List[str]] = {}    # (one plan per batch size: a point edited to
  for p, (d, k) in zip(kit["points"], plans):  # another driver mixed two in one curve, unsaid)
    shards.setdefault(str(p["input"]["shape"][0]), []).append(k)
    batch_drivers.setdefault(str(p["input"]["shape"][0]), []).append(d)
    profiles.setdefault(str(p["input"]["shape"][0]), []).append(str(
        (p.get("runtime") or {}).get("profile", (kit.get("compiler") or {}).get("profile"))))
  by_batch = lambda d: sorted(d.items(), key=lambda item: int(item[0]))
  for b, ds in by_batch(batch_drivers):
    if len(set(ds)) > 1:
      raise EdgeError(f"kit {path}: the points of batch {b} name drivers "
                      f"{' and '.join(sorted(set(ds)))}, where experiments.edge_kit gives a "
                      "batch size one: an edited kit.json? rebuild it with experiments.edge_kit")
  kit["shards"] = {b: sorted(set(ks)) for b, ks in by_batch(shards)}
  kit["profiles"] = {b: sorted(set(ps)) for b, ps in by_batch(profiles)}
  for d in drivers:
    check_runnable(dict(kit, driver=d), f"kit {path} ({kit['target']})")
  return kit, plans, functions


def _kit_profile(kit: Dict[str, Any], cfg: protocol.TimingConfig,
                 points: Sequence[records.Point] = ()) -> records.Profile:
  """The profile record of `kit` timed with `cfg` on this host, holding `points`."""
  cpu = host_cpu()
  return records.Profile(
      model=kit["model"], config=kit["config"],
      device_kind=f"{kit['target']} {cpu['model']}"
      if parse_target(kit["target"]).backend == "llvm-cpu"
      else kit["target"],
      platform=f"iree-{kit['driver']}", jax_version="none", jaxlib_version="none",
      dtype=kit["dtype"], modes=(kit["mode"],), reducer=kit.get("reducer", "unknown"),
      timing=dataclasses.asdict(cfg), points=tuple(points), created=records.now_iso())


def out_stem(out: str) -> str:
  """The absolute stem of profile path `out` ('<stem>.json'); ValueError when `out` names no
  file ('dir/.json' or 'dir/..json': abspath made the stem the folder itself, and the profile
  went to '<dir>.json' beside it, unchecked)."""
  stem = out[:-5] if out.endswith(".json") else out
  if os.path.basename(stem) in ("", ".", ".."):
    raise ValueError(f"--out={out} names no file: give the profile a name, e.g. "
                     f"{os.path.join(os.path.dirname(out) or '.', 'board.json')}")
  return os.path.abspath(stem)


def profile_kit(path: str, cfg: protocol.TimingConfig = protocol.TimingConfig(),
                progress: Optional[Callable[[str], None]] = None, driver: Optional[str] = None,
                out: Optional[str] = None, flag: Optional[str] = None):
  """Loads and checks every module of kit `path`, times each point on its own runtime plan's
  driver and shards (kits made before per-point plans: the kit's driver, one shard), or every
  point on `driver` when given -> (`records.Profile`, the kit manifest with the driver used:
  several drivers joined by '+'). With `out` (where `write_profile` will save it), a profile
  there it could not merge into (another model, device, driver, dtype or timing settings) is
  refused before anything is timed: the board's whole run was thrown away at the end. `flag`
  ('--kit'): the command-line flag `path` came through, named by a refusal of the kit itself
  (missing, an artifact, kit.json absent or bad: `console.input_flag`), not of this host."""
  path = os.path.abspath(path)
  kit, plans, functions = _kit_plans(path, driver, flag)
  rt.trial_in_child(kit["target"], f"kit {path}", "from vitprune.edge import kit\n"
                    "kit.trial_call(sys.argv[1], sys.argv[2] or None)\n", path, driver or "")
  if out is not None:
    stem = out_stem(out)
    records.check_save(_kit_profile(kit, cfg), os.path.dirname(stem), os.path.basename(stem),
                       flag="out", fields=edge_fields(kit), merge_fields=merge_edge_fields)
  rng = np.random.default_rng(0)
  calls = _bound_points(path, kit, plans, functions,
                        lambda shape: rng.normal(size=shape).astype(np.float32))
  done = []

  def on_done(key):
    done.append(key)
    if progress:
      p = kit["points"][key]
      progress(f"[{len(done)}/{len(calls)}] "
               f"{point_label(p['component'], p['batch_size'], p['tokens'], p['schedule'])}")

  meas = protocol.measure_all({k: (call, ()) for k, call in calls.items()}, cfg,
                              on_done=on_done,
                              compile_s={i: p["compile_s"] for i, p in enumerate(kit["points"])})
  points = tuple(records.Point.from_measurement(
      meas[i], component=p["component"], batch_size=p["batch_size"], tokens=p["tokens"],
      schedule=p["schedule"]) for i, p in enumerate(kit["points"]))
  return records.analyze(_kit_profile(kit, cfg, points)), kit


def _bound_points(path: str, kit: Dict[str, Any], plans, functions,
                  make_input: Callable[[Tuple[int, ...]], np.ndarray]
                  ) -> Dict[int, Callable[[], Any]]:
  """Every point of kit `path` (`_kit_plans`) loaded on its plan's driver and shards and bound
  to the kit's weights (put once per driver) and to an input `make_input(shape)` (put once per
  shape, driver and shards, in point order) -> {point index: call}."""
  weights = rt.read_weights(path, kit["weights"], f"kit {path}")
  _check_leaves(path, kit["weights"], weights)
  modules = [rt.checked_file(path, p["module"], f"kit {path}") for p in kit["points"]]
  runners, on_device = {}, {}
  for d in sorted({d for d, _ in plans}):
    runners[d] = rt.Runner(d, max(k for dd, k in plans if dd == d))
    on_device[d] = [runners[d].put(w) for w in weights]
  calls, inputs = {}, {}
  for i, (point, module, (d, k)) in enumerate(zip(kit["points"], modules, plans)):
    fns = runners[d].load(module, functions[i], contexts=k)
    shape = tuple(point["input"]["shape"])
    if (shape, d, k) not in inputs:
      inputs[shape, d, k] = runners[d].put_batch(make_input(shape), k)
    calls[i] = runners[d].bind(fns, [on_device[d][j] for j in point["args"]],
                               inputs[shape, d, k])
  return calls


def _check_leaves(path: str, entry: Dict[str, Any], weights: Sequence[np.ndarray]) -> None:
  """A kit packs every leaf of the tree under its key path: their names, shapes and bytes must
  give the recorded params_sha256 (weights.bin is checked by its own sha256, but an edited
  leaf shape of the same size, e.g. [384, 1152] -> [1152, 384], reached IREE's buffer error)."""
  if entry.get("mode") == "baked":
    return
  got = named_leaves_sha256((leaf["name"], w) for leaf, w in zip(entry["leaves"], weights))
  if got != entry.get("params_sha256"):
    raise EdgeError(f"kit {path}: the weight leaves' names and shapes do not give the recorded "
                    f"weights.params_sha256 (an edited record?)")


def trial_call(path: str, driver: Optional[str] = None) -> None:
  """One call of every point of kit `path` on zeros, each on its own plan's driver and shards
  as `profile_kit` runs them (the trial run of a kit for a named CPU:
  `runtime.trial_in_child`; the points are different graphs, and a missing instruction may sit
  in any one of them)."""
  kit, plans, functions = _kit_plans(path, driver)
  for call in _bound_points(path, kit, plans, functions,
                            lambda shape: np.zeros(shape, np.float32)).values():
    call()


def write_profile(profile, out: str, kit: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
  """Saves `profile` as JSON at `out` (+ CSV twin, same stem) with `records.save`: merged into
  an existing profile of the same setup only, the files published together. The JSON also
  carries an 'edge' entry (`edge_fields`), which must match the existing one's."""
  stem = out_stem(out)
  paths = records.save(profile, os.path.dirname(stem), os.path.basename(stem),
                       fields=None if kit is None else edge_fields(kit),
                       merge_fields=merge_edge_fields)
  return {"json": paths["json"], "csv": paths["csv"]}


def edge_fields(kit: Dict[str, Any]) -> Dict[str, Any]:
  """The board profile's 'edge' entry: kit target, compiler flags, IREE runtime version, host
  CPU, and the shards each batch size ran in and the compile profile its modules were built
  with (latency or throughput flags; from `_kit_plans`). A profile merges only into one of the
  same setup (`merge_edge_fields`): points of one curve timed in 2 shards and in 1, or compiled
  with the latency and with the throughput flags, were merged before."""
  return {"edge": {"target": kit["target"], "compiler": kit.get("compiler"),
                   "iree_runtime": _runtime_version(), "host_cpu": host_cpu()["model"],
                   "shards": kit.get("shards"), "profiles": kit.get("profiles")}}


EDGE_SETUP = ("target", "compiler", "iree_runtime", "host_cpu")


def merge_edge_fields(existing: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Any]:
  """`new`'s 'edge' entry (`edge_fields`) merged with that of the profile file `existing` (its
  JSON document): every setup entry the file states must be this run's, and each batch size both
  hold must have run in the same shards, its modules compiled with the same profile; the new
  batch sizes' are added. A file from before the shards or the compile profiles were kept says
  nothing about them (accepted); one without the entry or a setup field (every board profile
  has had them since 2026-12-03; an edited file merged unchecked), or with shards or profiles
  that are not an object of batch sizes, is refused: what was timed there cannot be checked."""
  old, cur = existing.get("edge"), new["edge"]
  redo = "(write this run to another --out, or move the file away)"
  if not isinstance(old, dict):
    raise ValueError(f"its 'edge' entry is {'missing' if old is None else 'not an object'}, "
                     f"so the board setup of its points cannot be checked {redo}")
  lacking = [key for key in EDGE_SETUP if key not in old]
  if lacking:
    raise ValueError(f"its 'edge' entry states no {', '.join(lacking)}, so the board setup "
                     f"of its points cannot be checked {redo}")
  for key in EDGE_SETUP:
    if old[key] != cur.get(key):
      raise ValueError(f"it was timed with edge {key} {old[key]!r}, this run with "
                       f"{cur.get(key)!r} (write it to another --out)")
  merged = {}
  for key, theirs, ours in (("shards", "ran in {} shard(s)", "in {}"),
                            ("profiles", "were compiled with the {} flags", "with the {}")):
    given = old.get(key)
    if given is not None and not (isinstance(given, dict) and all(
        isinstance(b, str) and b.isdigit() for b in given)):
      raise ValueError(f"its edge {key} is not an object of batch sizes ({reprlib.repr(given)}),"
                       f" so the setup of its points cannot be checked {redo}")
    per_batch = dict(given or {})
    for batch, value in (cur.get(key) or {}).items():
      if batch in per_batch and per_batch[batch] != value:
        raise ValueError(f"its batch-{batch} points {theirs.format(per_batch[batch])}, this "
                         f"run's {ours.format(value)} (write it to another --out)")
      per_batch[batch] = value
    merged[key] = dict(sorted(per_batch.items(), key=lambda i: int(i[0])))
  return {"edge": dict(cur, **merged)}


def _runtime_version() -> str:
  try:
    return md.version("iree-base-runtime")
  except md.PackageNotFoundError:
    return "unknown"
