r"""Method benchmark: latency (profiler protocol) and accuracy / fidelity of token-reduction
methods.

  # Default: the embedded trained vit_digits (weights/vit_digits) on the digits test split, CPU.
  python -m experiments.benchmark

  # The solver's POMT schedule and multi-layer schedules against the default method set:
  python -m experiments.benchmark --weights=weights/vit_digits \
      --solution=outputs/solve/vit_digits_paper_b1_float32_cpu.json \
      --multi_solution=outputs/solve/vit_digits_multi_b1_float32_cpu.json --multi_frontier=3

  # Latency only, random weights, GPU:
  python -m experiments.benchmark --model=deit_small_patch16_224 --data=none \
      --batch_size=1,4,16,64 --dtype=float32,bfloat16

Variants: unpruned; POMT from --solution (a solver output), else --pomt_schedule, else POMT at
block 3 matched to ToMe r8's token budget; the method variants of --variants (';'-separated
`[NAME=]METHOD:SCHEDULE` items, `defaults` = tome-r8, tome-r13, topk-r8, evit-0.7, topk-0.7 as
documented in vitprune/benchmark.py); the multi-layer solver's chosen schedule (+ --multi_frontier
frontier schedules) from --multi_solution.

Writes `<out_dir>/<model>_<device>.{csv,md,png}` atomically and prints the markdown table.
"""
from __future__ import annotations

import os
from typing import List, Sequence

from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import benchmark as bench
from vitprune import estimate
from vitprune import memory
from vitprune.digest import params_sha256
from vitprune.profile import protocol
from vitprune.profile.runner import device_info
from vitprune.records.solution import read_solution


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("model", None, "Registered model name: random init unless --weights; "
                      "default vit_digits with its embedded trained weights.", flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights directory (vitprune.checkpoint.save_weights); "
                      "default with neither flag: weights/vit_digits if present, else "
                      "test_tiny_vit with random weights.", flag_values=fv)
  flags.DEFINE_list("batch_size", ["1", "32"], "Batch sizes to time (comma list).", flag_values=fv)
  flags.DEFINE_list("dtype", ["float32"], "Compute dtypes (comma list of float32, bfloat16).",
                    flag_values=fv)
  flags.DEFINE_string("data", "digits", "'digits' (test split), an image folder (labelled or flat: "
                      "fidelity only), or 'none' (latency only).", flag_values=fv)
  flags.DEFINE_integer("num_images", None,
                       "Seeded class-balanced subset of the data (default all).", flag_values=fv)
  flags.DEFINE_string("variants", None, "';'-separated [NAME=]METHOD:SCHEDULE items or 'defaults' "
                      "(default: the default method set).", flag_values=fv)
  flags.DEFINE_string("pomt_schedule", None, "POMT schedule text, e.g. keep@3:120 (instead of "
                      "--solution).", flag_values=fv)
  flags.DEFINE_string("solution", None, "Solver output JSON (experiments.solve) for POMT.",
                      flag_values=fv)
  flags.DEFINE_string("multi_solution", None, "Multi-layer solver output JSON (--mode=multi).",
                      flag_values=fv)
  flags.DEFINE_integer("multi_frontier", 0, "Extra frontier schedules from --multi_solution.",
                       flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.3, "Seconds of timed calls per point.", flag_values=fv)
  flags.DEFINE_integer("compile_threads", 2, "Graphs compiled in parallel.", flag_values=fv)
  flags.DEFINE_integer("eval_batch_size", 64, "Batch size of the accuracy evaluation.",
                       flag_values=fv)
  flags.DEFINE_string("out_dir", "outputs/benchmark", "Output directory.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of random weights, inputs, data subset, timing order.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_bool("progress", True, "Show progress on stderr: a bar on a terminal, a line "
                    "every 30 s elsewhere (a log).", flag_values=fv)

def parse_dtypes(values: Sequence[str]) -> List[str]:
  out = [str(v).strip().lower() for v in values]
  bad = [v for v in out if v not in bench.DTYPES]
  if not out or bad:
    raise ValueError(f"--dtype: {bad or 'empty'}; valid: {', '.join(bench.DTYPES)}")
  if len(set(out)) != len(out):
    raise ValueError(f"--dtype: duplicate values in {out}")
  return out


def main(f: flags.FlagValues):
  """Checks every flag and --out_dir, then benchmarks, writes and prints the table."""
  batch_sizes = common.parse_ints(f.batch_size, "batch_size")
  dtypes = parse_dtypes(f.dtype)
  if f.multi_frontier < 0:
    raise ValueError(f"--multi_frontier must be >= 0, got {f.multi_frontier}")
  if f.multi_frontier and not f.multi_solution:
    raise ValueError("--multi_frontier needs --multi_solution")
  common.positive(f.eval_batch_size, "eval_batch_size")
  common.positive(f.compile_threads, "compile_threads")
  common.check_data_flag(f, words=("digits", "none"))
  use_data = common.data_word(f.data) != "none"
  if use_data:
    common.positive(f.num_images, "num_images", allow_none=True)
  elif f.num_images is not None:
    raise ValueError("--num_images needs data (--data is 'none')")
  elif f["eval_batch_size"].present:
    raise ValueError("--eval_batch_size needs data (--data is 'none': nothing is evaluated)")
  tcfg = protocol.flag_timing(min_run_time=f.min_run_time, seed=f.seed)
  common.check_output_dir(f.out_dir)
  common.check_outside_data(f.out_dir, "out_dir", f, words=("digits", "none"))
  cfg = common.model_config(f.model, f.weights)
  variants = bench.build_variants(
      cfg, variants=f.variants, pomt_schedule=f.pomt_schedule, solution=f.solution,
      multi_solution=f.multi_solution, multi_frontier=f.multi_frontier)
  solutions = {flag: (path, read_solution(path)) for flag, path in
               (("--solution", f.solution), ("--multi_solution", f.multi_solution)) if path}
  notes = []           # (said once every check passed: a refused run printed them, then failed)
  here = device_info()
  for flag, (path, sol) in solutions.items():
    timed = sol.profile
    if (timed.device_kind, timed.platform) != (here["device_kind"], here["platform"]):
      notes.append(f"{flag} {common.shown(path)} was chosen on {timed.device_kind} "
                   f"({timed.platform}) timings; this run times {here['device_kind']} "
                   f"({here['platform']}), whose latency steps lie elsewhere")
    if timed.dtype not in dtypes:       # (a bfloat16 choice was timed in float32, unsaid)
      raise ValueError(f"{flag} {common.shown(path)} was chosen on {timed.dtype} timings: "
                       f"benchmark it with --dtype={timed.dtype} (here {','.join(dtypes)})")
    if timed.batch_size not in batch_sizes:
      notes.append(f"{flag} {common.shown(path)} was chosen on batch {timed.batch_size} "
                   f"timings; --batch_size={','.join(map(str, batch_sizes))} does not time it "
                   "there")
  extra = sum(v.name.startswith("multi-f") for v in variants)
  if extra < f.multi_frontier:          # (10 asked, 5 timed without a word)
    notes.append(f"--multi_frontier={f.multi_frontier}, but {common.shown(f.multi_solution)} "
                 f"lists {extra} other multi-layer frontier schedules: timing {extra}")
  for dtype in dtypes:
    memory.check_batch_fits(cfg, batch_sizes, dtype)
    if use_data:
      memory.check_batch_fits(cfg, [f.eval_batch_size], dtype, flag="--eval_batch_size",
                              evaluation=True)
  cfg, params, source = common.load_model(f.model, f.weights, f.seed)
  for _, sol in solutions.values():
    sol.check_weights(params_sha256(params), f"the benchmarked ones ({source})")
  spec = bench.BenchmarkSpec(cfg, batch_sizes=tuple(batch_sizes), dtypes=tuple(dtypes),
                             timing=tcfg, threads=f.compile_threads,
                             eval_batch_size=f.eval_batch_size, seed=f.seed)
  data = None
  if use_data:
    common.check_digits_split(source, f.data)
    with common.named_by_flag(*common.SUBSET_PARAMS):
      data = estimate.load_eval_data(f.data, num_images=f.num_images, seed=f.seed,
                                     class_names=common.class_names(source),
                                     num_classes=cfg.num_classes, flag="--data")
  stem = bench.output_stem([{"model": cfg.name, **here}])
  bench.check_replaceable_outputs({k: os.path.join(f.out_dir, f"{stem}.{k}")
                                   for k in ("csv", "md", "png")})   # before the work
  # The table this run replaces, as it began: one another run writes meanwhile is not replaced
  # (two runs into one --out_dir both said they wrote it; it held the later one's).
  began = atomic.file_stamp(os.path.join(f.out_dir, f"{stem}.csv"))
  for text in notes:
    print(f"note: {text}")
  print(f"{cfg.name} ({common.shown(source)}): {len(variants)} variants x batch {batch_sizes} "
        f"x {dtypes}")
  provenance = bench.provenance_lines(
      weights_source=source, params_sha256=params_sha256(params),
      data_info=data.info if data is not None else None, device=here,
      command=common.command_line("experiments.benchmark", f))
  rows = bench.run_benchmark(spec, params, variants, data=data, progress=f.progress)
  print(bench.to_markdown(rows, provenance))  # (before the files: a write refused at the end
  # (a run killed while keeping its table left temporaries no later keep, of a fresh name
  # each, would find)
  atomic.cleanup_killed_keeps(os.path.join(f.out_dir, stem), ".csv")
  try:                                          # keeps the measured table on stdout)
    paths = bench.write_outputs(
        rows, f.out_dir, note=lambda text: print(f"note: {common.shown(text)}"),
        provenance=provenance, replaces=began)
  except atomic.ReplacedMeanwhileError:
    why = (f"{common.shown(os.path.join(f.out_dir, stem + '.csv'))} was written by another "
           "run meanwhile (two runs into one --out_dir at once: give each run its own)")
    try:
      kept_stem = os.path.basename(atomic.kept_name(os.path.join(f.out_dir, stem), ".csv"))
      kept = bench.write_outputs(rows, f.out_dir, stem=kept_stem,
                                 provenance=provenance)
    except (OSError, ValueError) as keep_error:
      raise atomic.ReplacedMeanwhileError(f"{why}; this run's table could not be kept either "
                                          f"({keep_error}): it is printed above") from None
    raise atomic.ReplacedMeanwhileError(
        f"{why}; this run's table is kept in {common.shown(kept['csv'])} (and its .md, .png)"
    ) from None
  print(f"wrote {common.shown(paths['csv'])}, {common.shown(paths['md'])}, "
        f"{common.shown(paths['png'])}")
  return rows


if __name__ == "__main__":
  common.run(main, define_flags)
