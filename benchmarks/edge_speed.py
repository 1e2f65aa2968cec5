r"""IREE (iree:host, llvm-cpu) vs JAX CPU latency of the deployed forward, compile time and size.

  python -m benchmarks.edge_speed                       # vit_digits + DeiT-S, batch 1 and 8
  python -m benchmarks.edge_speed --models=vit_digits --batch_sizes=1 --out=/tmp/e.json
  python -m benchmarks.edge_speed --drivers=auto,local-sync,local-task   # compare drivers

Per (model, batch, schedule): JAX = `jit(forward)` AOT-compiled (`vitprune.profile.timing`);
IREE = the same forward lowered by `vitprune.iree_build` and compiled for iree:host the way an
artifact is (`choose_runtime`: CPU profile, driver and batch shards from the model's estimated
work and this machine's cores; a driver named in --drivers compiles that driver's profile and
runs unsharded), weights as arguments (`--baked` models also
get a weights-baked-in module). JAX and every IREE variant of one point are timed interleaved:
--rounds shuffled rounds of the profiler's protocol (`vitprune.profile.protocol`), samples pooled;
latencies are medians with the IQR. vit_digits uses its embedded weights, other models random
init_params. Prints a markdown table and writes JSON (--out).
"""
from __future__ import annotations

import platform
import time
from typing import Dict, List

import numpy as np
from absl import flags

from experiments import common   # before jax: a Ctrl-C during the imports exits at once
import jax  # pylint: disable=g-bad-import-order,wrong-import-order
from vitprune import atomic
from vitprune.flops import forward_gflop
from vitprune import iree_build
from vitprune import memory
from vitprune.edge import runtime
from vitprune.edge.targets import CPU_DRIVERS, describe_runtime, host_cpu, parse_target
from vitprune.profile import protocol, runner, timing
from vitprune.reduce.methods import make_reducer
from vitprune.registry import get_config
from vitprune.schedule import check_schedule, parse_schedule, reduces_tokens


RESULT_FORMAT = "vitprune-edge-speed"    # marks --out files this script may replace


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this benchmark's flags."""
  flags.DEFINE_list("models", ["vit_digits", "deit_small_patch16_224"], "Registered models.",
                    flag_values=fv)
  flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.", flag_values=fv)
  flags.DEFINE_list("schedules", ["vit_digits=keep@3:35", "deit_small_patch16_224=keep@3:130"],
                    "model=schedule pairs timed (with --method) besides the unpruned model.",
                    flag_values=fv)
  flags.DEFINE_string("method", "pomt", "Token-reduction method of the --schedules.",
                      flag_values=fv)
  flags.DEFINE_list("baked", ["vit_digits"], "Models also compiled with weights baked in.",
                    flag_values=fv)
  flags.DEFINE_list("drivers", ["auto"], "IREE drivers timed: auto (the artifact's choice), "
                    "local-sync, local-task.", flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.5, "Seconds of timed calls per variant and point (split "
                     "over the rounds).", flag_values=fv)
  flags.DEFINE_integer("rounds", 3, "Interleaved rounds per point (samples pooled).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("out", "outputs/benchmark/edge_speed.json", "JSON output.",
                      flag_values=fv)


def _jax_call(cfg, params, schedule, reducer, images):
  fn = runner.model_fn(cfg, schedule, reducer, "float32")
  args = timing.device_put((params, images))
  compiled, compile_s = timing.compile_fn(fn, *args)
  return (lambda: jax.block_until_ready(compiled(*args))), compile_s


def _iree_modules(cfg, params, schedule, reducer, batch, weights, plans):
  """{(profile, shards): (lowered, vmfb, info)} for the distinct plans of `plans` (a sharded
  plan's module takes batch / shards images)."""
  needs = schedule.counts[0] < cfg.num_tokens or schedule.reduction_layers
  out, lows = {}, {}
  for plan in plans:
    key, b = (plan["profile"], plan["shards"]), batch // plan["shards"]
    if key not in out:
      if b not in lows:
        lows[b] = iree_build.lower(cfg, params, schedule=schedule,
                                   reducer=reducer if needs else None, batch_size=b,
                                   weights=weights)
      blob, info = iree_build.compile_module(lows[b].mlir, parse_target("iree:host"),
                                             profile=plan["profile"])
      out[key] = (lows[b], blob, info)
  return out


def _iree_call(driver, shards, low, blob, params, images):
  """The module run on `driver` in `shards` parts (`runtime.Runner`, as an artifact runs it)."""
  rt = runtime.Runner(driver, shards)
  fns = [rt.load_bytes(blob) for _ in range(shards)]
  leaves = jax.tree.leaves(params)
  weights = [rt.put(np.asarray(leaves[i], np.float32)) for i in low.weight_index]
  return rt.bind(fns, weights, rt.put_batch(np.asarray(images), shards))


def measure_interleaved(calls, tcfg: protocol.TimingConfig):
  """{key: Measurement} of `calls` {key: fn}: `tcfg.rounds` shuffled rounds, samples pooled."""
  return protocol.measure_all({k: (fn, ()) for k, fn in calls.items()}, tcfg)


def _plans(cfg, batch, drivers: List[str]) -> List[Dict]:
  """One runtime plan per distinct driver of `drivers` (a driver named runs unsharded); 'auto'
  marks the artifact's choice (possibly sharded, `choose_runtime`)."""
  host = parse_target("iree:host")
  auto = iree_build.choose_runtime(cfg, batch, host)
  plans = {plan_name(auto): dict(auto, auto=True)} if "auto" in drivers else {}
  for d in drivers:
    if d != "auto":
      plan = iree_build.choose_runtime(cfg, batch, host, d)
      plans.setdefault(plan_name(plan), dict(plan, auto=False))
  return list(plans.values())


def plan_name(plan: Dict) -> str:
  """'local-task', or 'local-sync x2 shards' for a plan of 2 shards."""
  return describe_runtime(plan["driver"], plan["shards"])


def run(f: flags.FlagValues, pairs: Dict[str, str], batch_sizes: List[int],
        tcfg: protocol.TimingConfig) -> dict:
  """Times every (model, batch, schedule) point -> the JSON document."""
  rows = []
  for name in f.models:
    cfg, params, source = common.load_model(name, None)
    scheds = [("full", parse_schedule(cfg, "full"))]
    if name in pairs:
      scheds.append((pairs[name], parse_schedule(cfg, pairs[name])))
    for b in batch_sizes:
      images = np.random.default_rng(0).normal(
          size=(b, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)
      plans = _plans(cfg, b, f.drivers)
      for text, sched in scheds:
        reducer = make_reducer(f.method)
        calls, built = {}, {}
        calls["jax"], jax_compile_s = _jax_call(cfg, params, sched, reducer, images)
        for mode in ["args"] + (["baked"] if name in f.baked else []):
          mods = _iree_modules(cfg, params, sched, reducer, b, mode, plans)
          for plan in plans:
            low, blob, info = mods[plan["profile"], plan["shards"]]
            key = (mode, plan_name(plan))
            calls[key] = _iree_call(plan["driver"], plan["shards"], low, blob, params, images)
            built[key] = (low, blob, info, plan)
        meas = measure_interleaved(calls, tcfg)
        jm = meas["jax"]
        for (mode, driver), (low, blob, info, plan) in built.items():
          im = meas[(mode, driver)]
          wbytes = _weights_bytes(params, low.weight_index)
          rows.append({"model": name, "weights_source": source, "batch_size": b,
                       "schedule": text, "weights": mode, "driver": plan["driver"],
                       "shards": plan["shards"],
                       "auto": plan["auto"], "profile": plan["profile"],
                       "gflop": forward_gflop(cfg, b, sched.counts),   # this row's work
                       "plan_gflop": plan["gflop"],     # what chose the plan: unpruned work
                       "jax_median_ms": jm.median * 1e3, "jax_iqr_ms": jm.iqr * 1e3,
                       "jax_compile_s": jax_compile_s, "iree_median_ms": im.median * 1e3,
                       "iree_iqr_ms": im.iqr * 1e3, "iree_compile_s": info["compile_s"],
                       "iree_flags": info["flags"], "iree_fallback": info["fallback"],
                       "samples": {"jax": len(jm.samples), "iree": len(im.samples)},
                       "ratio": im.median / jm.median, "module_mb": len(blob) / 2**20,
                       "weights_file_mb": (wbytes if mode == "args" else 0) / 2**20})
          print(f"{name} b{b} {text} {mode} {driver}: jax {jm.median * 1e3:.3f} ms, iree "
                f"{im.median * 1e3:.3f} ms ({im.median / jm.median:.2f}x)", flush=True)
  return {"machine": {"cpu": host_cpu()["model"],
                      "cores": iree_build.usable_cores(),      # (the cores the plans used)
                      "platform": platform.platform()},
          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "method": f.method, "min_run_time": f.min_run_time, "rounds": f.rounds,
          "rows": rows}


def _weights_bytes(params, index) -> int:
  """float32 bytes of the weight leaves a module takes as arguments."""
  leaves = jax.tree.leaves(params)
  return sum(4 * leaves[i].size for i in index)


def table(res: dict) -> str:
  """The rows as a markdown table; a pruned schedule names its method ('keep@3:35 (tome)': the
  method was said in the JSON alone)."""
  head = ("| model | batch | schedule | weights | driver | JAX ms (IQR) | IREE ms (IQR) | "
          "IREE/JAX | IREE compile s | module MB | weights.bin MB |")
  lines = [head, "|" + "---|" * 11]
  for r in res["rows"]:
    driver = plan_name(r) + (" (auto)" if r["auto"] else "")
    schedule = r["schedule"] + ("" if r["schedule"] == "full" else f" ({res['method']})")
    lines.append(f"| {r['model']} | {r['batch_size']} | {schedule} | {r['weights']} | "
                 f"{driver} | {r['jax_median_ms']:.3f} ({r['jax_iqr_ms']:.3f}) | "
                 f"{r['iree_median_ms']:.3f} ({r['iree_iqr_ms']:.3f}) | {r['ratio']:.2f}x | "
                 f"{r['iree_compile_s']:.1f} | {r['module_mb']:.2f} | "
                 f"{r['weights_file_mb']:.2f} |")
  return "\n".join(lines)


def main(f: flags.FlagValues) -> dict:
  """Checks the flags, times every point, prints the table, writes the JSON -> the document."""
  atomic.check_output_json(f.out, RESULT_FORMAT, "out")
  bad = [d for d in f.drivers if d not in ("auto",) + tuple(CPU_DRIVERS.values())]
  if bad or not f.drivers:
    raise ValueError(f"--drivers takes auto, {', '.join(CPU_DRIVERS.values())}; got "
                     f"{f.drivers}")
  common.check_names_once(f.drivers, "drivers", "driver")   # (a repeat was dropped unsaid)
  tcfg = protocol.flag_timing(min_run_time=f.min_run_time, max_retries=0, rounds=f.rounds)
  batch_sizes = common.parse_ints(f.batch_sizes, "batch_sizes")
  if not f.models or len(set(f.models)) != len(f.models):   # a repeat was timed twice
    raise ValueError(f"--models must name each model once, got {f.models}")
  pairs = {}
  for p in f.schedules:
    name, sep, text = p.partition("=")
    if not sep:
      raise ValueError(f"--schedules: {p!r} is not model=schedule")
    if name in pairs:            # the later one silently replaced the earlier
      raise ValueError(f"--schedules gives {name!r} twice ({pairs[name]}, {text}): one "
                       "schedule per model")
    pairs[name] = text
  if len(set(f.baked)) != len(f.baked):      # (the repeat was merged unsaid)
    raise ValueError(f"--baked must name each model once, got {f.baked}")
  reducer = make_reducer(f.method)
  for flag, names in (("schedules", pairs), ("baked", f.baked)):
    unknown = sorted(set(names) - set(f.models))
    if unknown and f[flag].present:      # a default naming an untimed model is fine
      raise ValueError(f"--{flag} names {unknown}, which --models={f.models} does not time")
  pruned = []
  for name in f.models:
    cfg = get_config(name)
    memory.check_batch_fits(cfg, batch_sizes, flag="--batch_sizes")
    if name in pairs:     # within the method's limits (was refused only after timing)
      try:
        schedule = check_schedule(cfg, parse_schedule(cfg, pairs[name]), reducer)
      except ValueError as e:          # (named neither the flag nor the model)
        raise ValueError(f"--schedules: {name}={pairs[name]}: {common.one_line(e)}") from None
      if not reduces_tokens(cfg, schedule):    # (the unpruned model, timed twice)
        raise ValueError(f"--schedules: {name}={pairs[name]} removes no token; it would time "
                         "the unpruned model again")
      pruned.append(name)
  if f["method"].present and not pruned:       # it would time the unpruned models only
    raise ValueError(f"--method={f.method} applies to the pruned --schedules, and none of "
                     f"--models={f.models} has one")
  res = {"format": RESULT_FORMAT, "command": common.command_line("benchmarks.edge_speed", f),
         **run(f, pairs, batch_sizes, tcfg)}
  print(f"\nmachine: {res['machine']['cpu']}, {res['machine']['cores']} cores")
  print(table(res))
  common.write_result(f.out, res, RESULT_FORMAT, sort_keys=True)
  print(f"wrote {f.out}")
  return res


if __name__ == "__main__":
  common.run(main, define_flags)
