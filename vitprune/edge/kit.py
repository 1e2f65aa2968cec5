"""On-device latency profiles from a kit of IREE modules (no jax on the board).

A kit (built on the host by `python -m experiments.edge_kit`, `vitprune.iree_build.build_kit`):
  kit.json      format "vitprune-edge-kit", version 1: target, backend, driver, runtime
                {profile, driver, gflop, shards, source}, compiler {iree_version, input_type,
                target_backends, flags, profile}, host_cpu (iree:host), model, config, dtype,
                mode ('model' | 'schedule'), reducer, weights {file, sha256, params_sha256,
                leaves}, points [{component, batch_size, tokens, schedule, module {file,
                sha256}, args (weight leaf indices), shards (the module takes [batch / shards,
                ...]; the batch runs split over that many devices), input {shape, dtype},
                compile_s, cached, flags, fallback}].
  weights.bin   every float32 parameter leaf (see `vitprune.edge.runtime.pack_weights`).
  modules/*.vmfb  one module per point: main(*weights[args], images) -> logits.

`profile_kit` times every point with the profiler's protocol (`vitprune.profile.protocol`) on
the kit's driver (or the one given) and returns a `vitprune.profile.records.Profile` (platform
'iree-<driver>', device kind naming the target and the CPU), which `write_profile` saves as the
JSON (+ CSV twin) `experiments.solve` reads.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from vitprune import atomic
from vitprune.profile import protocol
from vitprune.profile import records
from vitprune.edge import runtime as rt
from vitprune.edge.targets import EdgeError, check_driver, check_runnable, host_cpu, parse_target

KIT_FORMAT = "vitprune-edge-kit"
KIT_VERSION = 1
KIT_MANIFEST = "kit.json"


def read_kit(path: str) -> Dict[str, Any]:
  """The validated kit manifest of directory `path` (EdgeError when invalid)."""
  if not os.path.isdir(path):
    raise EdgeError(f"{path} is not a kit directory")
  doc = rt.read_json(os.path.join(path, KIT_MANIFEST), "kit")
  if doc.get("format") != KIT_FORMAT or doc.get("version") != KIT_VERSION:
    raise EdgeError(f"{path}/{KIT_MANIFEST}: not a {KIT_FORMAT} version {KIT_VERSION} manifest")
  missing = [k for k in ("target", "driver", "model", "config", "dtype", "mode", "weights",
                         "points") if k not in doc]
  if missing:
    raise EdgeError(f"{path}/{KIT_MANIFEST} lacks {missing}")
  if not doc["points"]:
    raise EdgeError(f"{path}/{KIT_MANIFEST} lists no points")
  return doc


def profile_kit(path: str, cfg: protocol.TimingConfig = protocol.TimingConfig(),
                progress: Optional[Callable[[str], None]] = None, driver: Optional[str] = None):
  """Loads and checks every module of kit `path`, times them on `driver` (default: the kit's)
  -> (`records.Profile`, the kit manifest with the driver used)."""
  path = os.path.abspath(path)
  kit = read_kit(path)
  kit["driver"] = check_driver(parse_target(kit["target"]), driver or kit["driver"])
  check_runnable(kit, f"kit {path} ({kit['target']})")
  weights = rt.read_weights(path, kit["weights"], f"kit {path}")
  modules = [rt.checked_file(path, p["module"], f"kit {path}") for p in kit["points"]]
  shards = [rt.check_shards(p.get("shards", 1), int(p["input"]["shape"][0]),
                            f"kit {path} ({p['module'].get('file')})") for p in kit["points"]]
  devices = rt.Devices(kit["driver"], max(shards))
  dev_weights = devices.put_weights(weights)
  rng = np.random.default_rng(0)
  calls, inputs = {}, {}
  for i, (point, module, k) in enumerate(zip(kit["points"], modules, shards)):
    fns = devices.load(module)[:k]
    shape = tuple(point["input"]["shape"])
    if (shape, k) not in inputs:
      inputs[shape, k] = devices.put_batch(rng.normal(size=shape).astype(np.float32), k)
    args = [[w[j] for j in point["args"]] for w in dev_weights[:k]]
    calls[i] = devices.bind(fns, args, inputs[shape, k])
  done = []

  def on_done(key):
    done.append(key)
    if progress:
      p = kit["points"][key]
      progress(f"[{len(done)}/{len(calls)}] {p['component']} b{p['batch_size']} "
               f"n{p['tokens']}")

  meas = protocol.measure_all({k: (call, ()) for k, call in calls.items()}, cfg,
                              on_done=on_done,
                              compile_s={i: p["compile_s"] for i, p in enumerate(kit["points"])})
  points = tuple(records.Point.from_measurement(
      meas[i], component=p["component"], batch_size=p["batch_size"], tokens=p["tokens"],
      schedule=p["schedule"]) for i, p in enumerate(kit["points"]))
  cpu = host_cpu()
  prof = records.Profile(
      model=kit["model"], config=kit["config"],
      device_kind=f"{kit['target']} {cpu['model']}" if kit["backend"] == "llvm-cpu"
      else kit["target"],
      platform=f"iree-{kit['driver']}", jax_version="none", jaxlib_version="none",
      dtype=kit["dtype"], modes=(kit["mode"],), reducer=kit.get("reducer", "unknown"),
      timing=dataclasses.asdict(cfg),
      points=points, created=records.now_iso())
  return records.analyze(prof), kit


def write_profile(profile, out: str, kit: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
  """Saves `profile` as JSON at `out` (+ CSV twin, same stem) atomically; the JSON also carries
  an 'edge' entry (kit target, compiler flags, IREE runtime version)."""
  doc = records.to_json(profile)
  if kit is not None:
    doc["edge"] = {"target": kit["target"], "compiler": kit.get("compiler"),
                   "iree_runtime": _runtime_version(), "host_cpu": host_cpu()["model"]}
  stem = out[:-5] if out.endswith(".json") else out
  atomic.write_bytes(stem + ".json", json.dumps(doc, indent=1, allow_nan=False).encode())
  atomic.write_bytes(stem + ".csv", records.to_csv(profile).encode())
  return {"json": stem + ".json", "csv": stem + ".csv"}


def _runtime_version() -> str:
  try:
    return md.version("iree-base-runtime")
  except md.PackageNotFoundError:
    return "unknown"
