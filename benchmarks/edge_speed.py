r"""IREE (iree:host, llvm-cpu) vs JAX CPU latency of the deployed forward, compile time and size.

  python -m benchmarks.edge_speed                       # vit_digits + DeiT-S, batch 1 and 8
  python -m benchmarks.edge_speed --models=vit_digits --batch_sizes=1 --out=/tmp/e.json

Per (model, batch, schedule): JAX = `jit(forward)` AOT-compiled and timed with the profiler's
protocol (`vitprune.profile.timing`); IREE = the same forward lowered by `vitprune.iree_build`
and compiled for iree:host (weights as arguments), timed with the same protocol on the IREE
runtime (`vitprune.profile.protocol`, the jax-free part). `--baked` models also get a weights-baked-in module (size
vs latency trade-off). vit_digits uses its embedded weights, other models random init_params.
Prints a markdown table and writes JSON (--out). Latencies are medians; the IQR is reported.
"""
from __future__ import annotations

import json
import os
import platform
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["vit_digits", "deit_small_patch16_224"], "Registered models.")
flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
flags.DEFINE_list("schedules", ["vit_digits=keep@3:35", "deit_small_patch16_224=keep@3:130"],
                  "model=schedule pairs timed (POMT) besides the unpruned model.")
flags.DEFINE_list("baked", ["vit_digits"], "Models also compiled with weights baked in.")
flags.DEFINE_float("min_run_time", 0.5, "Seconds of timed calls per point.")
flags.DEFINE_string("out", "outputs/benchmark/edge_speed.json", "JSON output.")


def _measure_jax(cfg, params, schedule, reducer, images, tcfg):
  from vitprune.profile import runner, timing  # pylint: disable=g-import-not-at-top
  fn = runner.model_fn(cfg, schedule, reducer, "float32")
  args = timing.device_put((params, images))
  compiled, compile_s = timing.compile_fn(fn, *args)
  m = timing.measure_all({0: (compiled, args)}, tcfg)[0]
  return m, compile_s


def _measure_iree(cfg, params, schedule, reducer, images, tcfg, weights):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vitprune import iree_build  # pylint: disable=g-import-not-at-top
  from vitprune.edge import runtime  # pylint: disable=g-import-not-at-top
  from vitprune.profile import protocol  # pylint: disable=g-import-not-at-top
  from vitprune.edge.targets import parse_target  # pylint: disable=g-import-not-at-top
  needs = schedule.counts[0] < cfg.num_tokens or schedule.reduction_layers
  low = iree_build.lower(cfg, params, schedule=schedule, reducer=reducer if needs else None,
                         batch_size=images.shape[0], weights=weights)
  blob, info = iree_build.compile_module(low.mlir, parse_target("iree:host"))
  runner = runtime.Runner("local-task")
  fn = runner.load_bytes(blob)
  leaves = jax.tree.leaves(params)
  args = [runner.put(np.asarray(leaves[i], np.float32)) for i in low.weight_index]
  args.append(runner.put(np.asarray(images)))
  m = protocol.measure_all({0: (lambda: fn(*args).to_host(), ())}, protocol.TimingConfig(
      min_run_time=tcfg.min_run_time))[0]
  wbytes = sum(np.asarray(leaves[i]).nbytes for i in low.weight_index)
  return m, info, len(blob), wbytes


def run() -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune.profile import timing  # pylint: disable=g-import-not-at-top
  from vitprune.reduce.methods import make_reducer  # pylint: disable=g-import-not-at-top
  from vitprune.schedule import parse_schedule  # pylint: disable=g-import-not-at-top
  from vitprune.edge.targets import host_cpu  # pylint: disable=g-import-not-at-top
  tcfg = timing.TimingConfig(min_run_time=FLAGS.min_run_time)
  pairs = dict(p.split("=", 1) for p in FLAGS.schedules)
  rows = []
  for name in FLAGS.models:
    cfg, params, source = common.load_model(name, None)
    scheds = [("full", parse_schedule(cfg, "full"))]
    if name in pairs:
      scheds.append((pairs[name], parse_schedule(cfg, pairs[name])))
    for b in [int(x) for x in FLAGS.batch_sizes]:
      images = np.random.default_rng(0).normal(
          size=(b, cfg.img_size, cfg.img_size, cfg.in_chans)).astype(np.float32)
      for text, sched in scheds:
        reducer = make_reducer("pomt")
        jm, jc = _measure_jax(cfg, params, sched, reducer, images, tcfg)
        modes = ["args"] + (["baked"] if name in FLAGS.baked else [])
        for mode in modes:
          im, info, mbytes, wbytes = _measure_iree(cfg, params, sched, reducer, images, tcfg,
                                                   mode)
          rows.append({"model": name, "weights_source": source, "batch_size": b,
                       "schedule": text, "weights": mode,
                       "jax_median_ms": jm.median * 1e3, "jax_iqr_ms": jm.iqr * 1e3,
                       "jax_compile_s": jc, "iree_median_ms": im.median * 1e3,
                       "iree_iqr_ms": im.iqr * 1e3, "iree_compile_s": info["compile_s"],
                       "iree_flags": info["flags"], "iree_fallback": info["fallback"],
                       "ratio": im.median / jm.median, "module_mb": mbytes / 2**20,
                       "weights_file_mb": (wbytes if mode == "args" else 0) / 2**20})
          print(f"{name} b{b} {text} {mode}: jax {jm.median * 1e3:.3f} ms, iree "
                f"{im.median * 1e3:.3f} ms", flush=True)
  return {"machine": {"cpu": host_cpu()["model"], "cores": os.cpu_count(),
                      "platform": platform.platform()},
          "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "min_run_time": FLAGS.min_run_time, "rows": rows}


def table(res: dict) -> str:
  head = ("| model | batch | schedule | weights | JAX ms (IQR) | IREE ms (IQR) | IREE/JAX | "
          "IREE compile s | module MB | weights.bin MB |")
  lines = [head, "|" + "---|" * 10]
  for r in res["rows"]:
    lines.append(f"| {r['model']} | {r['batch_size']} | {r['schedule']} | {r['weights']} | "
                 f"{r['jax_median_ms']:.3f} ({r['jax_iqr_ms']:.3f}) | "
                 f"{r['iree_median_ms']:.3f} ({r['iree_iqr_ms']:.3f}) | {r['ratio']:.2f}x | "
                 f"{r['iree_compile_s']:.1f} | {r['module_mb']:.2f} | "
                 f"{r['weights_file_mb']:.2f} |")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from experiments import common  # pylint: disable=g-import-not-at-top
  from vitprune import atomic  # pylint: disable=g-import-not-at-top
  common.quiet_logging()
  res = run()
  print(f"\nmachine: {res['machine']['cpu']}, {res['machine']['cores']} cores")
  print(table(res))
  atomic.write_json(FLAGS.out, res, sort_keys=True)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
