r"""Schedule solver CLI: a latency profile + an accuracy estimate -> a token schedule.

  # The paper's utility argmax (POMT: reduce at block 3 to n*), whole-model L(n) and A(n):
  python -m experiments.solve --profile=outputs/profile/P.json --estimate=outputs/estimate/E.json
  # Multi-layer: exact Pareto frontier over per-layer schedules from the per-block table and the
  # per-layer sensitivity table, fastest schedule keeping predicted accuracy >= 0.9:
  python -m experiments.solve --mode=multi --profile=BLOCKS.json --estimate=SENS.json \
      --accuracy_floor=0.9 [--step_bottoms_only]
  # The latency of the compiled graph instead of the isolated blocks: a profile holding
  # calibration schedules of the estimate's method (the main job's --solver=multi profile; it
  # times batch 1 and evaluates in batches of 64, hence --allow_batch_mismatch):
  python -m experiments.solve --mode=multi --profile=OUT/profile/P.json \
      --estimate=OUT/estimate/E.json --accuracy_floor=0.97 --allow_batch_mismatch
  # ... and measured in the loop: with the weights and the estimate's data, the floor is checked
  # on measured accuracy and the choice and its neighbours are compiled and timed:
  python -m experiments.solve --mode=multi --profile=BLOCKS.json --estimate=SENS.json \
      --accuracy_floor=0.9 --weights=weights/vit_digits --data=digits
  # ... or at most one point below the unpruned model's accuracy (the estimate's), and with
  # --floor_confidence by the whole paired 95 % interval of the change, not the value alone:
  python -m experiments.solve --mode=multi --profile=BLOCKS.json --estimate=SENS.json \
      --max_accuracy_drop=0.01 --weights=weights/vit_digits --data=digits [--floor_confidence]
  # ... or the most accurate schedule MEASURED within a latency budget (seconds):
  python -m experiments.solve --mode=multi --profile=OUT/profile/P.json \
      --estimate=OUT/estimate/E.json --latency_budget=0.0006 --weights=weights/vit_digits \
      --allow_batch_mismatch
  # ... with the accuracy model corrected from measured frontiers (up to 4 rounds), each round
  # also reporting the anchored per-image prediction it made before measuring:
  python -m experiments.solve --mode=multi --profile=BLOCKS.json --estimate=SENS.json \
      --accuracy_floor=0.9 --weights=weights/vit_digits --refine_accuracy_rounds=4 \
      --anchored_prediction

Writes `<out_dir>/<model>_<mode>_b<batch>_<dtype>_<device>.{json,png}` (the profile's dtype
and device; format in `vitprune/records/solution.py`) and prints the chosen schedule (compact
text, usable as `--schedule` elsewhere) with its predicted latency and accuracy.
"""
from __future__ import annotations

import os

from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import console
from vitprune import estimate as estimate_lib
from vitprune import memory
from vitprune import pipeline
from vitprune import solve_loop
from vitprune import solve_stage
from vitprune.config import (config_differences, config_to_dict, configs_shown, method_label,
                             record_method_kwargs)
from vitprune.data import shown_names
from vitprune.digest import params_sha256
from vitprune.profile.protocol import flag_timing
from vitprune.reduce.methods import make_reducer
from vitprune.profile import records
from vitprune.profile.runner import device_info
from vitprune.records.estimate import read_estimate
from vitprune.records import solution as solution_lib
from vitprune.records.solution import read_solution, write_solution
from vitprune.records.solution_text import summary_lines


# Flags one mode reads and the other would silently ignore; flags only the in-loop check reads.
MULTI_ONLY = ("accuracy_model", "monotone", "step_bottoms_only", "step_k")
LOOP_ONLY = ("data", "num_images", "seed", "eval_batch_size", "loop_neighbours", "min_run_time",
             "holdout_images")


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("profile", None, "Latency profile JSON (experiments.profile).",
                      flag_values=fv)
  flags.DEFINE_string("estimate", None, "Estimate JSON (experiments.estimate).", flag_values=fv)
  flags.DEFINE_enum("mode", "paper", ["paper", "multi"],
                            "paper: utility argmax over n (one reduction at --layer); multi: "
                            "per-layer schedules by dynamic programming.", flag_values=fv)
  flags.DEFINE_float("alpha", 0.5, "Utility weight of latency, in [0, 1].", lower_bound=0.0,
                     upper_bound=1.0, flag_values=fv)
  flags.DEFINE_integer("layer", 3, "Paper mode: the reducing block.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_float("accuracy_floor", None,
                     "Multi mode: fastest schedule with predicted accuracy >= this, in [0, 1] "
                     "(with --weights: accuracy measured on --data, latency timed in the loop).",
                     lower_bound=0.0, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_float("latency_budget", None,
                               "Multi mode: most accurate schedule with predicted latency <= this "
                               "many seconds (with --weights: accuracy measured on --data, "
                               "latency timed in the loop).", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("max_accuracy_drop", None,
                     "Multi mode: fastest schedule whose accuracy is at most this far below the "
                     "unpruned model's as the estimate measured it (0.01: one point), instead of "
                     "--accuracy_floor (with --weights: measured on --data).", lower_bound=0.0,
                     upper_bound=1.0, flag_values=fv)
  flags.DEFINE_bool("floor_confidence", False, "With --weights and --accuracy_floor or "
                    "--max_accuracy_drop: a schedule meets it only by its whole 95% interval on "
                    "--data (a drop's: the paired interval of its change against the unpruned "
                    "model).", flag_values=fv)
  flags.DEFINE_integer("batch_size", None,
                                "Profile batch size (default: the profile's only one, else the "
                                "estimate's).", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("metric", None, ["accuracy", "agreement"],
                              "Estimate metric (default: accuracy if labelled, else agreement).",
                    flag_values=fv)
  flags.DEFINE_string("method", None,
                                "Paper mode: reducer recorded for deployment (default: the "
                                "estimate's method when it reduced in a block, else pomt).",
                      flag_values=fv)
  flags.DEFINE_enum("accuracy_model", "incremental", ["incremental", "additive"],
                                 "Multi mode: how per-layer sensitivities combine.", flag_values=fv)
  flags.DEFINE_bool("monotone", True,
                                "Multi mode: pessimistic monotone envelope of the drops.",
                    flag_values=fv)
  flags.DEFINE_bool("step_bottoms_only", False,
                               "Multi mode: only counts at the bottom of a latency step (+ all).",
                    flag_values=fv)
  flags.DEFINE_float("step_k", 4.0, "Step-bottom noise multiplier.", lower_bound=0.0,
                     flag_values=fv)
  flags.DEFINE_bool("allow_batch_mismatch", False,
                                   "Combine a profile and an estimate of different batch sizes.",
                    flag_values=fv)
  flags.DEFINE_string("out_dir", "outputs/solve", "Output directory.", flag_values=fv)
  flags.DEFINE_string("weights", None, "Multi mode with --accuracy_floor or --latency_budget: "
                      "the weights the "
                      "estimate measured; the choice is then checked in the loop (measured "
                      "accuracy on --data, measured latency of compiled graphs).", flag_values=fv)
  flags.DEFINE_string("data", "digits", "With --weights: the estimate's data ('digits' or an "
                      "image folder); its fingerprint must match the estimate's.", flag_values=fv)
  flags.DEFINE_integer("num_images", None, "With --weights: the estimate's --num_images.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "With --weights: the estimate's --seed (data subset).",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_integer("holdout_images", None, "With --weights: the estimate's "
                       "--holdout_images (a main job's with --holdout_images: the images it "
                       "measured are the others).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("eval_batch_size", 64, "With --weights: evaluation batch size.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_bool("measure_frontier", False, "With --weights, --mode=multi: measure the "
                    "accuracy of every frontier schedule on the estimate's data.", flag_values=fv)
  flags.DEFINE_integer("refine_accuracy_rounds", 0, "With --weights, --mode=multi: correct the "
                       "combined accuracy model from the measured frontier and re-solve, up to "
                       "this many rounds (0: off).", lower_bound=0, flag_values=fv)
  flags.DEFINE_bool("anchored_prediction", False, "With --refine_accuracy_rounds: also report "
                    "each round's anchored per-image prediction (solve.anchored_accuracy), "
                    "before measuring; re-measures the estimate's single reductions once for "
                    "their per-example margins (about the estimate's own time).", flag_values=fv)
  flags.DEFINE_integer("loop_neighbours", 2, "With --weights: schedules (frontier or measured) "
                       "on each side of the choice timed in the loop (0: the choice alone).",
                       lower_bound=0, upper_bound=1000, flag_values=fv)
  flags.DEFINE_float("min_run_time", 0.25, "With --weights: seconds of timed calls per graph "
                     "(the main job's default).", flag_values=fv)


def main(f: flags.FlagValues):
  """Checks the flags and the output directory, reads the two records, solves, writes the
  outputs; returns (Solution, paths)."""
  if not f.profile or not f.estimate:
    raise ValueError("--profile and --estimate are required")
  if f.mode == "paper":
    for name in ("accuracy_floor", "latency_budget", "max_accuracy_drop"):
      if f[name].value is not None:
        raise ValueError(f"--{name} applies to --mode=multi only")
    unread = common.given_flags(f, MULTI_ONLY)
    if unread:
      raise ValueError(f"{common.applies(unread)} to --mode=multi only")
  unread = common.given_flags(f, ("layer", "method"))
  if f.mode == "multi" and unread:
    raise ValueError(f"{common.applies(unread)} to --mode=paper only (multi mode chooses every "
                     "block, for the estimate's method)")
  given = common.given_flags(f, ("accuracy_floor", "latency_budget", "max_accuracy_drop"))
  if len(given) > 1:
    raise ValueError(f"give only one of {', '.join(given)} (each sets what the choice meets)")
  if f.max_accuracy_drop is not None:
    solve_stage.check_accuracy_drop(f.max_accuracy_drop, "--max_accuracy_drop")
  if f.floor_confidence and (not f.weights or f.mode != "multi" or (
      f.accuracy_floor is None and f.max_accuracy_drop is None)):
    raise ValueError("--floor_confidence judges measured intervals: pass --mode=multi, "
                     "--weights and --accuracy_floor or --max_accuracy_drop")
  if f.mode == "multi" and f["alpha"].present and given:
    raise ValueError("--alpha weighs the utility, which multi mode uses only without "
                     "--accuracy_floor / --latency_budget / --max_accuracy_drop")
  if f["step_k"].present and not f.step_bottoms_only:
    raise ValueError("--step_k applies with --step_bottoms_only only")
  if f.weights and (f.mode != "multi" or not given):
    raise ValueError("--weights measures a multi-mode --accuracy_floor, --max_accuracy_drop or "
                     "--latency_budget choice in the loop: pass --mode=multi and one of them")
  if f.measure_frontier and not f.weights:
    raise ValueError("--measure_frontier measures schedules on the data: pass --weights (and "
                     "the estimate's --data)")
  if f.refine_accuracy_rounds and not f.weights:
    raise ValueError("--refine_accuracy_rounds measures schedules on the data: pass --weights "
                     "(and the estimate's --data)")
  solve_stage.check_one_frontier_measurement(f.measure_frontier, f.refine_accuracy_rounds,
                                             ("--measure_frontier", "--refine_accuracy_rounds"))
  if f.anchored_prediction and not f.refine_accuracy_rounds:
    raise ValueError("--anchored_prediction reports on the accuracy refinement: pass "
                     "--refine_accuracy_rounds (and --weights)")
  unread = common.given_flags(f, LOOP_ONLY)
  if not f.weights and unread:
    raise ValueError(f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} read only "
                     "with --weights (the in-loop check)")
  if f["seed"].present and f.num_images is None and f.holdout_images is None:
    # (it passed the data check whatever it said)
    raise ValueError("--seed draws the --num_images subset (the estimate's) and the held-out "
                     "images (--holdout_images); without either every image is used and it "
                     "changes nothing")
  common.check_output_dir(f.out_dir)
  timing_cfg = flag_timing(min_run_time=f.min_run_time)    # checked before any work
  with console.input_flag("--profile", f.profile):
    profile = records.load(f.profile)
  with console.input_flag("--estimate", f.estimate):
    estimate = read_estimate(f.estimate)
  solve_stage.check_same_model(profile, estimate)     # before anything read from either
  solve_stage.check_held_out(estimate)
  calibrated = (solve_stage.profile_latency_model(profile, estimate, f.batch_size,
                                                  f.allow_batch_mismatch)
                if f.mode == "multi" else None)
  batch = calibrated[0] if calibrated else solve_stage.resolve_batch(  # checks outputs up front
      profile, estimate, f.batch_size, solve_stage.MODE_COMPONENTS[f.mode],
      f.allow_batch_mismatch)
  stem = solution_lib.solution_stem(profile.model, f.mode, batch, profile.dtype,
                                    profile.device_kind)
  solution_lib.check_output(f.out_dir, stem)
  out = os.path.join(f.out_dir, stem + ".json")
  # What this run replaces, as it began: a solution another run writes there meanwhile is not
  # replaced (two solves into one folder both said they wrote it; it held one of them).
  began, replaced = atomic.file_stamp(out), earlier_solution(out)
  if f.weights:
    here = device_info()
    if (profile.device_kind, profile.platform) != (here["device_kind"], here["platform"]):
      raise ValueError(f"--weights times the choice on this machine ({here['device_kind']}, "
                       f"{here['platform']}), but {f.profile} was measured on "
                       f"{profile.device_kind} ({profile.platform}): run the in-loop check on "
                       "that device, or solve without --weights")
  loop = in_loop(f, estimate, profile.dtype) if f.weights else None
  if f.mode == "paper":
    sol = solve_stage.solve_paper(
        profile, estimate, alpha=f.alpha, layer=f.layer, batch_size=f.batch_size,
        metric=f.metric, method=f.method, allow_batch_mismatch=f.allow_batch_mismatch)
  else:
    sol = solve_stage.solve_multilayer(
        profile, estimate, accuracy_floor=f.accuracy_floor, latency_budget=f.latency_budget,
        max_accuracy_drop=f.max_accuracy_drop, floor_confidence=f.floor_confidence,
        alpha=f.alpha, batch_size=f.batch_size, metric=f.metric,
        accuracy_model=f.accuracy_model, monotone=f.monotone,
        step_bottoms_only=f.step_bottoms_only, step_k=f.step_k,
        allow_batch_mismatch=f.allow_batch_mismatch,
        latency_model=calibrated[1] if calibrated else None,
        **({} if loop is None else {"evaluate": loop["evaluate"],
                                    "num_images": loop["num_images"],
                                    "measure_all": f.measure_frontier,
                                    "refine_rounds": f.refine_accuracy_rounds,
                                    "margins": loop["margins"],
                                    "loop_neighbours": f.loop_neighbours}))
    if loop is not None:
      spec = pipeline.PipelineSpec(batch_size=sol.profile.batch_size, dtype=profile.dtype,
                                   method=estimate.method,
                                   timing=timing_cfg)
      timer = pipeline.ScheduleTimer(loop["cfg"], loop["params"], spec, loop["reducer"])
      # (no verify stage here: the unpruned graph is timed with the candidates, so that the
      # speed-up printed is of one measurement, not a measured choice against a prediction)
      loop_kw = dict(neighbours=f.loop_neighbours, num_images=loop["num_images"],
                     time_unpruned=True)
      if f.latency_budget is not None:
        sol = solve_loop.check_budget_in_loop(sol, loop["evaluate"], timer, **loop_kw)
      else:
        sol = solve_loop.check_in_loop(sol, estimate, None, loop["evaluate"], timer, **loop_kw)
  try:
    paths = write_solution(sol, f.out_dir, stem, replaces=began)
  except OSError as e:    # another run's meanwhile, a file not ours, its folder gone: the
    # solution is kept beside it (its minutes of in-loop measurement were lost)
    atomic.keep_json_beside(out, sol.to_json(), solution_lib.FORMAT, e, (
        f"{common.shown(out)} was written by another run meanwhile (two runs into one "
        "--out_dir at once: give each run its own)"
        if isinstance(e, atomic.ReplacedMeanwhileError) else str(e)), indent=1)
  if replaced:                    # (an earlier solve into this folder was replaced unsaid)
    print(f"note: replaced {common.shown(paths['json'])}, {replaced}")
  if f.mode == "multi" and None in estimate.layers:     # (dropped without a word)
    print(f"note: the estimate's embed row (tokens dropped after the embedding) is not used: "
          f"--mode=multi prunes in blocks only, here blocks "
          f"{[l for l in estimate.layers if l is not None]}")
  for line in summary_lines(sol):
    print(line)
  if common.is_random_init(estimate.weights_source):   # (estimate said it, solve did not: a probe)
    print(f"note: the estimate measured random weights ({estimate.weights_source}): its "
          "accuracies are of an untrained model, for plumbing checks only")
  print(f"wrote {common.shown(paths['json'])} and {common.shown(paths['png'])}")
  return sol, paths


def earlier_solution(path: str) -> str:
  """What the solution at `path` was ('' when there is none): the line saying what a new solve
  of the same model, mode, batch size, dtype and device replaces (one that does not read, e.g.
  of a newer format, is replaced too: said so)."""
  if not os.path.isfile(path):
    return ""
  try:
    old = read_solution(path)
  except (OSError, ValueError) as e:
    why = str(e).splitlines()[0]
    named = os.path.abspath(path) + ": "                      # (the path, named before it)
    why = why[len(named):] if why.startswith(named) else why
    return f"a solution file this vitprune does not read ({why})"
  measured_with = record_method_kwargs(old.estimate.method, old.estimate.method_kwargs or {},
                                       old.version)   # (a version-1 file's per-layer draws, said)
  return (f"a solution of {old.created} from estimate {common.shown(old.estimate.path)} "
          f"({method_label(old.estimate.method, measured_with)}), which chose "
          f"{old.chosen.schedule}")


_SELECTION_FLAGS = (("num_images", "num_images"), ("subset_seed", "seed"),
                    ("holdout_images", "holdout_images"))


def _selection_hint(f: flags.FlagValues, estimate) -> str:
  """'; it was measured with --holdout_images=100 (...)': the selection flags whose values the
  estimate records otherwise ('' when none differ: other images, not other flags)."""
  selection = estimate.data.get("selection") or {}
  if selection:                               # (no holdout_images: none held out)
    selection = {"holdout_images": None, **selection}
  differ = [(flag, selection[key]) for key, flag in _SELECTION_FLAGS
            if key in selection and selection[key] != f[flag].value]
  if not differ:
    return ""
  return "; it was measured with " + ", ".join(
      f"no --{flag}" if value is None else f"--{flag}={value}" for flag, value in differ)


def in_loop(f: flags.FlagValues, estimate, profile_dtype: str) -> dict:
  """The weights and data the estimate measured, as the solve stage's measurement callbacks;
  refuses weights or data other than the estimate's. Schedules are evaluated in the estimate's
  dtype (one written before it was recorded: the profile's, as the solver pairs them)."""
  dtype = estimate.dtype or profile_dtype
  memory.check_batch_fits(estimate.config, [f.eval_batch_size], dtype,   # before loading or
                          flag="--eval_batch_size", evaluation=True)     # evaluating
  common.check_data_flag(f)
  common.check_outside_data(f.out_dir, "out_dir", f)
  cfg, params, source = common.load_model(None, f.weights)
  same_params = params_sha256(params) == estimate.weights_sha256
  # Another model's weights are named by their models; the same parameters saved under another
  # name are the model it measured (passed), in another configuration named by its fields.
  ours, theirs = config_to_dict(cfg), config_to_dict(estimate.config)
  fields = (None if cfg.name != estimate.config.name and not same_params else
            [k for k in config_differences(ours, theirs) if k != "name"])
  if fields is None or fields:   # (the digest alone said "differs": which model each is)
    said = ((cfg.name, estimate.config.name) if fields is None else
            configs_shown(cfg.name, ours, estimate.config.name, theirs, fields))
    raise ValueError(f"--weights={f.weights} hold {said[0]}, estimate {estimate.source} "
                     f"measured {said[1]}: "
                     + ("the same parameters in another configuration" if same_params else
                        "not the weights it measured"))
  if not same_params:
    raise ValueError(f"--weights={f.weights} are not the weights estimate {estimate.source} "
                     "measured (weights sha256 differs)")
  common.check_digits_split(source, f.data)
  named, recorded_names = common.class_names(source), estimate.data.get("classes")
  if named and recorded_names and list(named) != list(recorded_names):
    raise ValueError(f"--weights={f.weights} name the classes {shown_names(named)}, estimate "
                     f"{estimate.source} labelled its images with {shown_names(recorded_names)} "
                     "(the same parameters with other class names: the measured accuracy "
                     "would score other labels)")
  with common.named_by_flag(*common.SUBSET_PARAMS):
    data = estimate_lib.load_eval_data(f.data, num_images=f.num_images, seed=f.seed,
                                       class_names=named, num_classes=cfg.num_classes,
                                       holdout_images=f.holdout_images, flag="--data")
  common.check_subset_seed_used(f, data)
  if data.info.get("fingerprint") != estimate.data_fingerprint:
    raise ValueError(f"--data={f.data} (--num_images={f.num_images}, --seed={f.seed}"
                     + ("" if f.holdout_images is None else
                        f", --holdout_images={f.holdout_images}") + ") is not "
                     f"the data estimate {estimate.source} measured (fingerprint differs; it "
                     f"records {estimate.data.get('source')!r}, selection "
                     f"{estimate.data.get('selection')})" + _selection_hint(f, estimate))
  recorded = estimate.data.get("content_sha256")     # (absent: written before it was recorded)
  if recorded and data.info.get("content_sha256") != recorded:
    raise ValueError(f"--data={f.data} holds other images than estimate {estimate.source} "
                     "measured: the same file names and sizes, other contents (data."
                     "content_sha256 differs)")
  reducer = make_reducer(estimate.method, **estimate.reducer_kwargs)
  margins = {} if f.anchored_prediction else None
  metric = estimate.metric(f.metric)                 # what the solver reads from the estimate
  evaluate = estimate_lib.schedule_evaluator(cfg, params, data, reducer,
                                             batch_size=f.eval_batch_size,
                                             dtype=dtype, record_margins=margins,
                                             metric=metric)

  def remeasured():        # when the refinement starts: after every input check of the solve
    got, differ = solve_loop.remeasure_margins(estimate, evaluate, metric)
    margins.update(got)               # (`evaluate` recorded them too; these are the contract)
    if differ:
      print(f"note: {len(differ)} of the {len(got)} schedules of {common.shown(estimate.source)} "
            f"measure another {metric} here ({', '.join(differ[:3])}"
            f"{', ...' if len(differ) > 3 else ''}): the anchored predictions start from this "
            "run's per-example margins")
    return margins

  return {"cfg": cfg, "params": params, "reducer": reducer, "evaluate": evaluate,
          "num_images": int(len(data.indices)),
          "margins": None if margins is None else remeasured}


if __name__ == "__main__":
  common.run(main, define_flags)
