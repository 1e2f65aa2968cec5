r"""Latency-workload profiler CLI: latency vs tokens kept, steps, per-block tables, schedules.

  python -m experiments.profile          # the embedded default: profile -> estimate -> solve ->
                                         # verify on weights/vit_digits (vitprune/pipeline.py)
  python -m experiments.profile --model=deit_small_patch16_224 --batch_size=1,8 \
      --dtype=bfloat16 --mode=model --adaptive --threads=8 \
      --compile_cache_dir=/tmp/jax_cache --min_run_time=0.5
  python -m experiments.profile --model=deit_small_patch16_224 --mode=block --tokens=197:50
  python -m experiments.profile --model=deit_small_patch16_224 --mode=schedule \
      --schedule=197,197,197,180,180,180,160,160,160,140,140,140,120

Writes `<out_dir>/<model>_<mode>_b<batch>_<dtype>_<device>.{json,csv,png}` (schema in
`vitprune/profile/records.py`; with several batch sizes also one profile of all of them,
`..._b1-8_...`, which a later run at one of its batch sizes updates too) and prints a summary
table with steps ("n -> n-1 saves x% (y ms)"), flat stretches and the per-block predictor's
errors.
"""
from __future__ import annotations

import os
from typing import List, Optional

from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import memory
from vitprune import pipeline
from vitprune import solve_stage
from vitprune.config import COMPUTE_DTYPES
from vitprune.profile import latency_model
from vitprune.profile import protocol
from vitprune.profile import runner
from vitprune.profile import timing
from vitprune.schedule import parse_schedule, parse_token_grid, reduces_tokens


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("model", "vit_digits", "Registered model name (timm name). "
                               "vit_digits without --weights uses the embedded weights/vit_digits.",
                      flag_values=fv)
  flags.DEFINE_list("batch_size", ["1"], "Batch sizes, comma-separated.", flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", list(COMPUTE_DTYPES), "Compute dtype.", flag_values=fv)
  flags.DEFINE_string(
      "tokens", "all", "Token counts entering block 0: 'all', 'a:b', 'a:b:step' (inclusive) or "
      "'n1,n2,...'; each within [prefix + 1, num_tokens].", flag_values=fv)
  flags.DEFINE_enum("mode", "pipeline", ["pipeline"] + list(runner.MODES),
                            "pipeline: profile -> estimate -> solve -> verify (needs trained "
                            "weights and data); model: whole-forward curve; block: per-block "
                            "table; schedule: the graphs of --schedule.", flag_values=fv)
  flags.DEFINE_multi_string(
      "schedule", [], "Schedule(s) for --mode=schedule (repeat the flag): depth + 1 "
      "comma-separated counts, or any syntax vitprune.schedule.parse_schedule accepts.",
      flag_values=fv)
  flags.DEFINE_string(
      "reducer", None, "Token-drop method of the pruned graphs (default: the library's "
      "'random'; keep_first: a static slice; --mode=model|block drop after the embedding, "
      "which only these two do).", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "Output directory (default: outputs/pipeline/ for the "
                                 "main job, with profile/, estimate/, solve/ and summary.json; "
                                 "outputs/profile/ with --mode).", flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.25, "Seconds of timed calls per point.", flag_values=fv)
  flags.DEFINE_float("max_rel_iqr", 0.1,
                                    "Re-measure points whose IQR / median exceeds this.",
                     flag_values=fv)
  flags.DEFINE_integer("max_retries", 2, "Re-measurement rounds for wide points (at most 100).",
                       flag_values=fv)
  flags.DEFINE_string("compile_cache_dir", None,
                               "Persistent JAX compilation cache directory (reuse across runs).",
                      flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed: random weights, inputs, measurement order.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights directory (vitprune.checkpoint.load_weights); "
                      "its config replaces --model.", flag_values=fv)
  flags.DEFINE_integer("threads", 2, "Parallel compile threads.", lower_bound=1, flag_values=fv)
  flags.DEFINE_bool("adaptive", False,
                                "Coarse pass, then every count in non-flat intervals.",
                    flag_values=fv)
  flags.DEFINE_integer("coarse_stride", 0, "Adaptive coarse stride (0: ~16 points).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("max_points", 0, "Adaptive: at most this many token counts per batch "
                       "size, the refinement's most informative first (0: no limit).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("chunk_points", 0, "Compile and time this many token counts at a time, "
                       "writing the points after each chunk, so an interrupted run keeps them "
                       "(0: one measurement per phase).", lower_bound=0, flag_values=fv)
  flags.DEFINE_bool("resume", False, "Continue the profiles in --out_dir (a killed run's "
                    "chunks): points they hold are not measured again.", flag_values=fv)
  flags.DEFINE_bool("confirm_steps", True, "Modes model, block and the paper pipeline: "
                    "time the counts of each step and lone count whose two sides were timed "
                    "apart (chunks, the refinement, re-measured wide points, --resume) again "
                    "together, in one measurement whose samples replace theirs (at most 16 "
                    "counts, largest savings first; a run that measures nothing confirms "
                    "nothing, unless the flag is given: --resume --confirm_steps).",
                    flag_values=fv)
  flags.DEFINE_bool("progress", True, "Show progress on stderr: a bar on a terminal, a line "
                    "every 30 s elsewhere (a log).", flag_values=fv)
  # --mode=pipeline only:
  flags.DEFINE_string("data", "digits", "Pipeline data: 'digits' (bundled) or an image folder "
                      "(labelled: accuracy; flat: agreement with the unpruned model).",
                      flag_values=fv)
  flags.DEFINE_integer("num_images", None, "Pipeline: seeded class-balanced subset size "
                       "(default: all).", flag_values=fv)
  flags.DEFINE_integer("holdout_images", None, "Pipeline: hold this many of the evaluation "
                       "images (seeded by --seed, class-balanced) out of the estimate and the "
                       "solve; the verify stage measures the chosen schedule on them, images "
                       "the choice never saw (default: none held out).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("eval_batch_size", 64, "Pipeline: accuracy batch size.", flag_values=fv)
  flags.DEFINE_float("alpha", 0.5, "Pipeline: latency weight of the paper's utility, in [0, 1].",
                     lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_integer("layer", 3, "Pipeline: block where the chosen schedule prunes.",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("method", "pomt", "Pipeline: method of the chosen schedule.", flag_values=fv)
  flags.DEFINE_list("method_opts", [], "Pipeline: the method's reducer options, key=value (e.g. "
                    "nested=false for random, normalize=true for evit); random drop's seed is "
                    "--seed.", flag_values=fv)
  flags.DEFINE_enum("solver", "paper", ["paper", "multi"],
                              "Pipeline: paper (one reduction at --layer, utility argmax) or multi "
                              "(per-layer schedule from the exact Pareto frontier).",
                    flag_values=fv)
  flags.DEFINE_float("accuracy_floor", None, "Pipeline, --solver=multi: fastest schedule "
                              "whose accuracy measured on the data (agreement when unlabelled) "
                              "is >= this, in [0, 1]; it and its neighbours are timed in the "
                              "loop.", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_float("latency_budget", None, "Pipeline, --solver=multi: most accurate "
                               "schedule whose latency (seconds, > 0) is <= this; the choice "
                               "and its neighbours are measured and timed in the loop.",
                     flag_values=fv)
  flags.DEFINE_float("max_accuracy_drop", None, "Pipeline, --solver=multi: fastest schedule "
                     "whose measured accuracy is at most this far below the unpruned model's on "
                     "the same images (0.01: one point), instead of --accuracy_floor.",
                     lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_bool("floor_confidence", False, "Pipeline, --solver=multi with "
                    "--accuracy_floor or --max_accuracy_drop: a schedule meets it only by its "
                    "whole 95% interval on the images (a drop's: the paired interval of its "
                    "change against the unpruned model), not by its measured value alone.",
                    flag_values=fv)
  flags.DEFINE_integer("calibration_schedules", pipeline.PipelineSpec.calibration_schedules,
                       "Pipeline, --solver=multi: multi-layer schedules compiled and timed with "
                       "the uniform curve to fit the latency model of the compiled graph "
                       f"({latency_model.MIN_CALIBRATION_SCHEDULES} to "
                       f"{latency_model.MAX_CALIBRATION_SCHEDULES}).", flag_values=fv)
  flags.DEFINE_bool("measure_frontier", False, "Pipeline, --solver=multi: measure the accuracy "
                    "of every frontier schedule on the data (the solution then reports measured "
                    "accuracy for the whole frontier and the combined model's error).",
                    flag_values=fv)
  flags.DEFINE_integer("loop_neighbours", pipeline.PipelineSpec.loop_neighbours,
                       "Pipeline, --solver=multi with --accuracy_floor or --latency_budget: "
                       "schedules on each side of the choice (frontier or measured) measured and "
                       "timed in the loop with it (0: the choice alone is timed, and a budget "
                       "still checked on its measurement).", lower_bound=0, upper_bound=1000,
                       flag_values=fv)
  flags.DEFINE_integer("retime_top", pipeline.PipelineSpec.retime_top,
                       "Pipeline, --solver=paper: the counts of highest utility timed again with "
                       "the unpruned graph (interleaved, samples pooled into the profile's) "
                       "until n* is one of them (0: n* as the profile measured it).",
                       lower_bound=0, upper_bound=1000, flag_values=fv)
  flags.DEFINE_integer("refine_accuracy_rounds", 0, "Pipeline, --solver=multi: correct the "
                       "combined accuracy model from the measured frontier and re-solve, up to "
                       "this many rounds (0: off).", lower_bound=0, flag_values=fv)


# Flags one side of --mode reads and the other would silently ignore.
PIPELINE_ONLY = ("data", "num_images", "eval_batch_size", "alpha", "layer", "method",
                 "method_opts", "solver",
                 "accuracy_floor", "latency_budget", "max_accuracy_drop", "floor_confidence",
                 "calibration_schedules", "measure_frontier",
                 "refine_accuracy_rounds", "loop_neighbours", "retime_top", "holdout_images")
GRID_ONLY = ("adaptive", "coarse_stride", "max_points", "chunk_points", "resume")  # model/block
PROFILE_ONLY = ("schedule", "reducer", "compile_cache_dir") + GRID_ONLY


def check_mode_flags(f: flags.FlagValues) -> None:
  """Refuses flags given on the command line that --mode does not read (one line naming them)."""
  pipeline_mode = f.mode == "pipeline"
  unread = common.given_flags(f, PROFILE_ONLY if pipeline_mode else PIPELINE_ONLY)
  if unread:
    if pipeline_mode:
      hint = " (the pipeline's method is --method)" if "--reducer" in unread else ""
      for names, modes in ((("schedule",), "schedule"), (GRID_ONLY, "model or block"),
                           (PROFILE_ONLY, "model, block or schedule")):
        group = [u for u in unread if u[2:] in names]     # the narrowest modes named first
        if group:
          raise ValueError(f"{common.applies(group)} to --mode={modes}, not "
                           f"--mode=pipeline{hint if '--reducer' in group else ''}")
    raise ValueError(f"{common.applies(unread)} to --mode=pipeline only, not --mode={f.mode}")
  grid_flags = ("tokens", "confirm_steps") + GRID_ONLY     # (confirm_steps: paper's too)
  if f.mode == "schedule" and common.given_flags(f, grid_flags):
    raise ValueError(f"{common.applies(common.given_flags(f, grid_flags))} to --mode=model or "
                     "block (a grid of token counts), not --mode=schedule (its graphs are "
                     "--schedule)")
  for name in ("coarse_stride", "max_points"):
    if f[name].present and not f.adaptive:
      raise ValueError(f"--{name} needs --adaptive")


def _batch_sizes(values: List[str]):
  return tuple(common.parse_ints(values, "batch_size"))    # >= 1, distinct


def _timing_from_flags(f) -> timing.TimingConfig:
  return protocol.flag_timing(min_run_time=f.min_run_time, max_rel_iqr=f.max_rel_iqr,
                              max_retries=f.max_retries, seed=f.seed)


def pipeline_from_flags(f: flags.FlagValues, out_dir: Optional[str] = None):
  """-> (cfg, params, weights source, PipelineSpec, EvalData). Every flag (and `out_dir`, when
  given) is checked before the parameters and data are loaded; raises ValueError / KeyError /
  OSError naming the problem."""
  if not f.weights and f.model != common.EMBEDDED_MODEL:
    raise ValueError(f"--mode=pipeline estimates accuracy, so it needs trained --weights for "
                     f"{f.model} (use --mode=model for latency alone)")
  common.positive(f.eval_batch_size, "eval_batch_size")
  common.positive(f.num_images, "num_images", allow_none=True)
  common.check_data_flag(f)
  multi_only = common.given_flags(f, ("accuracy_floor", "latency_budget", "max_accuracy_drop",
                                      "calibration_schedules", "measure_frontier",
                                      "refine_accuracy_rounds"))
  if multi_only and f.solver != "multi":
    raise ValueError(f"{common.applies(multi_only)} to --solver=multi only")
  given = common.given_flags(f, ("accuracy_floor", "latency_budget", "max_accuracy_drop"))
  if len(given) > 1:
    raise ValueError(f"give only one of {', '.join(given)} (each sets what the choice meets)")
  if f.latency_budget is not None and f.latency_budget <= 0:
    raise ValueError(f"--latency_budget must be a positive number of seconds, got "
                     f"{f.latency_budget:g}")
  if f.max_accuracy_drop is not None:
    solve_stage.check_accuracy_drop(f.max_accuracy_drop, "--max_accuracy_drop")
  latency_model.check_calibration_count(f.calibration_schedules, "--calibration_schedules")
  if f.floor_confidence and (f.solver != "multi" or (f.accuracy_floor is None and
                                                      f.max_accuracy_drop is None)):
    raise ValueError("--floor_confidence applies to --solver=multi with --accuracy_floor or "
                     "--max_accuracy_drop")
  if f["loop_neighbours"].present and (f.solver != "multi" or (
      f.accuracy_floor is None and f.latency_budget is None and f.max_accuracy_drop is None)):
    raise ValueError("--loop_neighbours applies to --solver=multi with --accuracy_floor, "
                     "--max_accuracy_drop or --latency_budget (the choices timed in the loop)")
  if f["confirm_steps"].present and f.solver != "paper":
    raise ValueError("--confirm_steps applies to --solver=paper (multi fits a latency model "
                     "to its curve and calibration schedules)")
  if f["retime_top"].present and f.solver != "paper":
    raise ValueError("--retime_top applies to --solver=paper (multi times its choices in the "
                     "loop: --loop_neighbours)")
  solve_stage.check_one_frontier_measurement(
      f.measure_frontier, f.refine_accuracy_rounds,
      ("--measure_frontier", "--refine_accuracy_rounds"))
  if f["layer"].present and f.solver == "multi":
    raise ValueError("--layer applies to --solver=paper only (multi chooses every block)")
  if f["alpha"].present and (f.accuracy_floor is not None or f.latency_budget is not None
                             or f.max_accuracy_drop is not None):
    raise ValueError("--alpha weighs the utility, which is used only without --accuracy_floor "
                     "/ --latency_budget / --max_accuracy_drop")
  cfg = common.model_config(common.given_model(f), f.weights)
  sizes = _batch_sizes(f.batch_size)
  if len(sizes) != 1:
    raise ValueError(f"--mode=pipeline takes one --batch_size, got {list(sizes)}")
  tokens = parse_token_grid(cfg, f.tokens) if f["tokens"].present else None
  spec = pipeline.PipelineSpec(
      batch_size=sizes[0], dtype=f.dtype, tokens=tokens, data=f.data,
      num_images=f.num_images, eval_batch_size=f.eval_batch_size, alpha=f.alpha,
      layer=f.layer, method=f.method,
      method_options=tuple(sorted(common.parse_method_options(f.method_opts).items())),
      timing=_timing_from_flags(f), threads=f.threads,
      seed=f.seed, solver=f.solver, accuracy_floor=f.accuracy_floor,
      latency_budget=f.latency_budget, max_accuracy_drop=f.max_accuracy_drop,
      floor_confidence=f.floor_confidence,
      measure_frontier=f.measure_frontier, calibration_schedules=f.calibration_schedules,
      refine_accuracy_rounds=f.refine_accuracy_rounds, loop_neighbours=f.loop_neighbours,
      retime_top=f.retime_top, holdout_images=f.holdout_images,
      confirm_steps=f.confirm_steps)
  spec.check(cfg)
  memory.check_batch_fits(cfg, [spec.batch_size], spec.dtype)
  memory.check_batch_fits(cfg, [spec.eval_batch_size], spec.dtype, flag="--eval_batch_size",
                          evaluation=True)
  if out_dir is not None:
    common.check_output_dir(out_dir, published=True)
    common.check_outside_data(out_dir, "out_dir", f)
    atomic.check_replaceable(os.path.abspath(out_dir), pipeline.is_pipeline_dir)
  cfg, params, source = common.load_model(common.given_model(f), f.weights, f.seed)
  common.check_digits_split(source, spec.data)
  with common.named_by_flag(*common.SUBSET_PARAMS):
    data = pipeline.load_data(spec, common.class_names(source), cfg.num_classes, flag="--data")
  n = len(data.indices)
  if spec.holdout_images is not None and spec.holdout_images >= n:
    raise ValueError(f"--holdout_images={spec.holdout_images} leaves none of the {n} evaluation "
                     f"images to choose on: hold out at most {n - 1}")
  return cfg, params, source, spec, data


def spec_from_flags(f: flags.FlagValues, out_dir: Optional[str] = None):
  """-> (ProfileSpec, params); every flag (and `out_dir`, when given) is checked before the
  parameters are built; raises ValueError / KeyError / OSError naming the problem."""
  cfg = common.model_config(common.given_model(f), f.weights)
  tokens = parse_token_grid(cfg, f.tokens)
  schedules = tuple(parse_schedule(cfg, s) for s in f.schedule)
  spec = runner.ProfileSpec(cfg=cfg, batch_sizes=_batch_sizes(f.batch_size), dtype=f.dtype,
                            mode=f.mode, tokens=tokens, schedules=schedules,
                            timing=_timing_from_flags(f), threads=f.threads,
                            adaptive=f.adaptive, coarse_stride=f.coarse_stride,
                            max_points=f.max_points, chunk_points=f.chunk_points,
                            reducer=f.reducer, seed=f.seed, confirm_steps=f.confirm_steps,
                            confirm_held=bool(f["confirm_steps"].present and f.confirm_steps))
  memory.check_batch_fits(cfg, spec.batch_sizes, spec.dtype,
                          held_per_example=spec.held_input_bytes())
  if f.compile_cache_dir:      # JAX would only warn and run without a cache
    common.check_output_dir(f.compile_cache_dir, "compile_cache_dir")
  if out_dir is not None:
    common.check_output_dir(out_dir)
  _, params, _ = common.load_model(common.given_model(f), f.weights, f.seed)
  return spec, params


def main(f: flags.FlagValues):
  """Runs what the flags describe: the pipeline (-> its summary) or a profile (-> one Profile
  per batch size), printing the summary."""
  check_mode_flags(f)
  if f.mode == "pipeline":
    out_dir = "outputs/pipeline" if f.out_dir is None else f.out_dir    # "" is refused
    cfg, params, source, spec, data = pipeline_from_flags(f, out_dir)
    summary = pipeline.run_pipeline(cfg, params, spec, out_dir, weights_source=source,
                                    data=data, progress=f.progress)
    print(pipeline.format_summary(summary))
    return summary
  out_dir = "outputs/profile" if f.out_dir is None else f.out_dir
  spec, params = spec_from_flags(f, out_dir)
  if f.reducer is None and any(reduces_tokens(spec.cfg, s) for s in spec.schedules):
    # (keep@3:33 was timed as random drop's graph: a user measuring a POMT choice read it as
    # POMT's; the header said "reducer random")
    print("note: the schedules are timed with random drop, the default --reducer: pass "
          "--reducer=pomt (or the method you deploy) to time that method's graph")
  profiles = runner.run_profile(spec, params=params, out_dir=out_dir,
                                compile_cache_dir=f.compile_cache_dir, progress=f.progress,
                                resume=f.resume)
  for prof in profiles:
    print(runner.summary_table(prof))
  return profiles


if __name__ == "__main__":
  common.run(main, define_flags)
