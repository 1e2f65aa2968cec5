r"""Build an on-device profile kit: one IREE module per token count (or schedule), compiled on the
host in parallel and cached, for `python -m vitprune.edge profile --kit=DIR --out=FILE.json` on a
board.

  python -m experiments.edge_kit --tokens=65:5:-4 --target=iree:host --out=kits/digits
  python -m experiments.edge_kit --model=deit_small_patch16_224 --tokens=197:17:-20 \
      --target=iree:llvm-cpu:aarch64-linux-gnu:cortex-a78ae --batch_sizes=1,8 --out=kits/deit
  python -m experiments.edge_kit --mode=schedule --schedules="keep@3:35;full" --out=kits/s

--model/--weights follow experiments.common.load_model; --tokens follows
vitprune.schedule.parse_token_grid. Mode model drops tokens right after the embedding (the
profiler's 'model' mode, reducer --reducer, default 'random'); mode schedule compiles the given
schedules (';'-separated). Compiled modules are cached in --cache_dir by a hash of the MLIR and
the flags (iree:host: and of this machine's CPU), so rebuilding a kit recompiles only what
changed.
"""
from __future__ import annotations

import os
import sys

from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import iree_build
from vitprune import memory
from vitprune.config import COMPUTE_DTYPES
from vitprune.edge.kit import point_label
from vitprune.edge.targets import check_compute_dtype, check_driver, parse_target
from vitprune.profile.runner import make_drop_reducer, removes_tokens
from vitprune.schedule import parse_schedule, parse_token_grid


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("model", None, "Registered model name (default: the embedded vit_digits).",
                      flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights directory.", flag_values=fv)
  flags.DEFINE_string("target", "iree:host", "IREE target (see vitprune.edge.targets).",
                      flag_values=fv)
  flags.DEFINE_enum("mode", "model", ["model", "schedule"], "What the kit times.", flag_values=fv)
  flags.DEFINE_string("tokens", "all", "Token grid for mode model ('all', 'a:b[:step]', list).",
                      flag_values=fv)
  flags.DEFINE_string("schedules", None, "';'-separated schedules for mode schedule.",
                      flag_values=fv)
  flags.DEFINE_list("batch_sizes", ["1"], "Batch sizes.", flag_values=fv)
  flags.DEFINE_string("driver", None, "CPU targets: runtime driver local-sync or local-task "
                      "(default: chosen from the model's work, see "
                      "vitprune.iree_build.choose_runtime).", flag_values=fv)
  flags.DEFINE_integer("cpu_cores", None, "CPU targets: cores of the CPU the modules run "
                       "on, for batch shards (default: this machine's for iree:host, 1 for a "
                       "cross-compiled CPU; 1: never shard).", flag_values=fv)
  flags.DEFINE_string("reducer", None, "Token-reduction method of the pruned graphs (default: "
                      "the library's 'random'): mode model drops after the embedding, which "
                      "only random and keep_first (a static slice) do; mode schedule takes any "
                      "method (pomt, topk, tome, evit): time a deployed schedule with its own, "
                      "e.g. --reducer=pomt.", flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", list(COMPUTE_DTYPES), "Compute dtype.", flag_values=fv)
  flags.DEFINE_integer("jobs", max(1, os.cpu_count() or 1), "Parallel compiles.", flag_values=fv)
  flags.DEFINE_string("cache_dir", "outputs/iree_cache", "Compiled-module cache ('' for none).",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Kit directory to write.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out.", flag_values=fv)


def main(f: flags.FlagValues) -> str:
  """Checks every flag and --out, then builds the kit; returns its path."""
  common.check_new_dir(f.out, "out", overwrite=f.overwrite)
  batches = common.parse_ints(f.batch_sizes, "batch_sizes")
  common.positive(f.jobs, "jobs")
  common.positive(f.cpu_cores, "cpu_cores", allow_none=True)
  target = parse_target(f.target)
  if f.mode == "model" and f.schedules:
    raise ValueError("--schedules applies to --mode=schedule (mode model times --tokens)")
  if f.mode == "schedule" and f["tokens"].present:
    raise ValueError("--tokens applies to --mode=model (mode schedule times --schedules)")
  if f.cpu_cores is not None and (f.driver is not None or target.backend != "llvm-cpu"):
    raise ValueError("--cpu_cores applies to CPU targets whose driver is chosen automatically "
                     "(not with --driver or a GPU target)")
  if f.driver is not None:
    check_driver(target, f.driver)
  if f.cache_dir:
    common.check_output_dir(f.cache_dir, "cache_dir")
    if atomic.is_within(f.cache_dir, f.out):   # (found after every compile: --out existed)
      raise ValueError(f"--cache_dir={f.cache_dir} is --out={f.out} or inside it: the kit is "
                       "published whole over --out, so its cache cannot live there; give "
                       "another --cache_dir")
  check_compute_dtype([target], f.dtype, "use --dtype=float32")
  cfg = common.model_config(f.model, f.weights)
  # (the board's own memory is not known here: its runtime says so in one line, vitprune.edge)
  memory.check_batch_fits(cfg, batches, f.dtype, flag="--batch_sizes")
  reducer, name = make_drop_reducer(f.reducer)
  grid = parse_token_grid(cfg, f.tokens) if f.mode == "model" else ()
  schedules = [parse_schedule(cfg, s.strip()) for s in (f.schedules or "").split(";")
               if s.strip()] if f.mode == "schedule" else ()
  if len(set(schedules)) != len(schedules):
    raise ValueError("--schedules lists a schedule twice")
  if f["reducer"].present and not removes_tokens(cfg, grid, schedules):
    raise ValueError(f"--reducer={f.reducer} given, but no "
                     f"{'count of --tokens' if f.mode == 'model' else 'schedule of --schedules'}"
                     " removes a token: nothing would use it (it was recorded in the kit)")
  cfg, params, _ = common.load_model(f.model, f.weights)
  total = len(batches) * (len(grid) or len(schedules))
  done = []

  def on_done(point, info):           # (it said '[1/2] compiled (6.6 s)' of no graph named)
    done.append(1)
    how = "cached" if info["cached"] else f"{info['compile_s']:.1f} s"
    what = point_label(point["component"], point["batch_size"], point["tokens"],
                       point["schedule"])
    print(f"[{len(done)}/{total}] compiled {what} ({how})", file=sys.stderr)

  path = iree_build.build_kit(f.out, cfg, params, target=f.target, mode=f.mode, grid=grid,
                              schedules=schedules, batch_sizes=batches, reducer=reducer,
                              reducer_name=name, dtype=f.dtype, threads=f.jobs,
                              cache_dir=f.cache_dir or None, overwrite=f.overwrite,
                              on_done=on_done, driver=f.driver, cores=f.cpu_cores)
  print(f"wrote {common.shown(path)}")
  return path


if __name__ == "__main__":
  common.run(main, define_flags)
