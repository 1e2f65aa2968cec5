r"""Board-side CLI (iree-base-runtime + numpy + pillow + absl-py; never imports jax).

  python -m vitprune.edge run --artifact=deploy/digits --images=digits_imgs [--target=iree:host]
  python -m vitprune.edge bench --artifact=deploy/digits        # batch: the module's own
  python -m vitprune.edge profile --kit=kits/digits --out=outputs/profile/board.json
  ... [--driver=local-sync|local-task]   CPU modules: override the driver the record names

run:     classifies an image folder (labelled `DIR/<class>/<img>`: accuracy; flat: predictions)
         or one image file,
         then times one batch with the profiler's protocol.
bench:   times the artifact's module on a deterministic random batch (median, IQR).
profile: times every module of a kit and writes a latency profile JSON (+ CSV twin) that
         `experiments.solve` / `vitprune.profile.records.load` read.
Errors (tampered or incomplete artifacts/kits, a module for a device this host lacks, a flag the
command does not read, an output path it could not write or a file it did not write itself) end
the program with one line `error: ...` and exit status 1, before any timing where they can; a
malformed flag exits 2 (`error: ...` then `(see --help)`), Ctrl-C exits 130 (`error:
interrupted`), SIGTERM 143 (`error: terminated`). Results JSON (--output) carry "format":
"vitprune-edge-result".
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from vitprune import atomic
from vitprune import console

try:      # (a board without requirements-edge.txt installed: a traceback ended in ImportError)
  from absl import app, flags
  import numpy as np
  from vitprune.data import (accuracy_line, check_images_flag, check_not_read_as_an_image,
                             iterate_batches, per_image_time, prediction_accuracy,
                             prediction_line, prediction_rows, read_image_folder)
  from vitprune.digits import check_digits_folder
except ImportError as e:   # (numpy: imported by the package itself, before this module runs)
  if (e.name or "").split(".")[0] not in ("absl", "PIL"):
    raise                  # (one of vitprune's own imports broken: not a missing package)
  console.fail(f"a package vitprune.edge needs cannot be imported ({e}): install them on this "
               "machine with pip install -r requirements-edge.txt")
from vitprune.edge import kit as kit_lib
from vitprune.edge import runtime
from vitprune.edge.targets import BACKEND_DRIVERS, EdgeError, describe_runtime
from vitprune.profile import protocol
from vitprune.profile import records

FLAGS = flags.FLAGS
COMMANDS = ("run", "bench", "profile")
flags.DEFINE_string("artifact", None, "Artifact directory with IREE targets (run, bench).")
flags.DEFINE_string("images", None, "ImageFolder root, a flat folder of images or one image "
                    "file (run).")
flags.DEFINE_string("target", None, "Target to use, e.g. iree:host (default: the first target "
                    "of the artifact this host can run).")
flags.DEFINE_enum("driver", None, sorted({d for ds in BACKEND_DRIVERS.values() for d in ds}),
                  "IREE driver to run on instead of the one the artifact or kit records "
                  "(llvm-cpu targets: local-sync or local-task).")
flags.DEFINE_string("kit", None, "Kit directory (profile).")
flags.DEFINE_string("out", None, "Profile JSON to write (profile).")
flags.DEFINE_string("output", None, "Optional JSON file for run/bench results.")
flags.DEFINE_integer("num_workers", 0, "Threads decoding images (run).")
flags.DEFINE_bool("quiet", False, "Do not print per-file lines / progress.")
flags.DEFINE_float("min_run_time", 0.5, "Seconds of timed calls per point.")
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing each point.")
flags.DEFINE_integer("min_reps", 5, "At least this many timed calls per point.")
flags.DEFINE_float("max_rel_iqr", 0.1, "Re-measure points whose IQR / median exceeds this.")
flags.DEFINE_integer("max_retries", 2, "Re-measurement rounds for wide points (at most 100).")
flags.DEFINE_integer("seed", 0, "profile: seed of the shuffled order the kit's points are "
                     "timed in.", lower_bound=0, upper_bound=console.MAX_SEED)


def timing_config():
  return protocol.flag_timing(min_run_time=FLAGS.min_run_time, warmup=FLAGS.warmup,
                              min_reps=FLAGS.min_reps, max_rel_iqr=FLAGS.max_rel_iqr,
                              max_retries=FLAGS.max_retries, seed=FLAGS.seed)


def latency(model, images, cfg) -> dict:
  m = protocol.measure_all({0: (model.timed_call(images), ())}, cfg)[0]
  note = protocol.wide_spread_note(m, cfg)
  return {"median_s": m.median, "q25_s": m.q25, "q75_s": m.q75, "iqr_s": m.iqr,
          "num_samples": len(m.samples), "retries": m.retries,
          "batch_size": int(images.shape[0]), **({"note": note} if note else {})}


def cmd_run() -> dict:
  if not FLAGS.artifact or not FLAGS.images:
    raise ValueError("run needs --artifact and --images")
  check_images_flag(FLAGS.images)
  cfg = timing_config()
  model = runtime.load(FLAGS.artifact, FLAGS.target, FLAGS.driver, flag="--artifact")
  if model.output_kind != "logits":
    raise EdgeError(f"{FLAGS.artifact}: its {model.target} module outputs [B, "
                    f"{model.num_outputs}] {model.output_kind} (no classification head): `run` "
                    "classifies images; `bench` times the module")
  # (no manifest, a board copy of iree/ alone: its record says what the weights trained on)
  check_digits_folder(FLAGS.images, runtime.weights_meta(model.manifest)
                      if model.manifest is not None else runtime.record_training(model.record),
                      f"the weights of {FLAGS.artifact}")
  dataset = read_image_folder(FLAGS.images, "--images", class_names=model.class_names,
                              num_classes=model.num_outputs)   # labels by class name
  preds, probs, first = [], [], None
  for images, _, idx in iterate_batches(dataset, model.preprocessing, model.batch_size,
                                        num_workers=FLAGS.num_workers):
    logits = model(images).astype(np.float64)
    first = images if first is None else first
    z = np.exp(logits - logits.max(-1, keepdims=True))
    valid = idx >= 0
    preds += np.argmax(logits, -1)[valid].tolist()
    probs += (z / z.sum(-1, keepdims=True)).max(-1)[valid].tolist()
  rows = prediction_rows(dataset.files, preds, probs, model.class_names,  # (labels: output
                         dataset.labels.tolist() if dataset.labelled else None)  # indices)
  res = {"artifact": model.path, "target": model.target, "driver": model.driver,
         "shards": model.shards, "images": os.path.abspath(FLAGS.images),
         "num_images": len(dataset), "model": model.record.get("model"),
         "schedule": model.record.get("schedule"), "predictions": rows,
         **prediction_accuracy(rows)}
  res["latency"] = latency(model, first, cfg)
  if not FLAGS.quiet:
    for r in rows:
      print(prediction_line(r))
  print(f"model {res['model']} schedule {res['schedule']} target {res['target']} driver "
        f"{describe_runtime(model.driver, model.shards)}: "
        f"{console.counted(res['num_images'], 'image')}")
  print(accuracy_line(res))
  print_latency(res["latency"], res["num_images"])
  return res


def print_latency(lat: dict, num_images: Optional[int] = None) -> None:
  """The latency line; `num_images`: the images of the folder classified (fewer than the
  batch: the timed batch was padded with zero images), None: a full batch."""
  b = lat["batch_size"]
  print(f"latency batch {b}: median {lat['median_s'] * 1e3:.3f} ms (IQR "
        f"{lat['iqr_s'] * 1e3:.3f} ms, {lat['num_samples']} samples), "
        f"{per_image_time(lat['median_s'], b, b if num_images is None else num_images)}")
  if "note" in lat:
    print(f"note: {lat['note']}")


def cmd_bench() -> dict:
  if not FLAGS.artifact:
    raise ValueError("bench needs --artifact")
  cfg = timing_config()
  model = runtime.load(FLAGS.artifact, FLAGS.target, FLAGS.driver, flag="--artifact")
  images = np.random.default_rng(0).normal(size=model.input_shape).astype(np.float32)
  res = {"artifact": model.path, "target": model.target, "driver": model.driver,
         "shards": model.shards, "model": model.record.get("model"),
         "schedule": model.record.get("schedule"),
         "latency": latency(model, images, cfg)}
  print(f"model {res['model']} schedule {res['schedule']} target {res['target']} driver "
        f"{describe_runtime(model.driver, model.shards)}")
  print_latency(res["latency"])
  return res


def cmd_profile() -> dict:
  if not FLAGS.kit or not FLAGS.out:
    raise ValueError("profile needs --kit and --out")
  progress = None if FLAGS.quiet else (lambda msg: print(msg, file=sys.stderr))
  profile, kit = kit_lib.profile_kit(FLAGS.kit, timing_config(), progress=progress,
                                     driver=FLAGS.driver, out=FLAGS.out, flag="--kit")
  paths = kit_lib.write_profile(profile, FLAGS.out, kit)
  held = records.load(paths["json"])     # (merged into a profile there: the summary of them all)
  merged = records.merged_line(paths["json"], held, profile)
  if merged:
    print(merged)
  profile = held
  for p in sorted(profile.points, key=lambda p: (p.batch_size, -p.tokens, p.schedule or ())):
    print(f"{kit_lib.point_label(p.component, p.batch_size, p.tokens, p.schedule)}: median "
          f"{p.median_s * 1e3:.3f} ms (IQR {p.iqr_s * 1e3:.3f} ms)")
  for line in records.step_lines(profile):     # (the curve's shape, seen before solve reads it)
    print(line)
  print(f"wrote {console.printable(paths['json'])}, {console.printable(paths['csv'])}")
  return {"profile": paths}


# The flags each command reads (besides the timing ones); any other flag given is refused.
COMMAND_FLAGS = {"run": ("artifact", "images", "target", "driver", "output", "num_workers",
                         "quiet"),
                 "bench": ("artifact", "target", "driver", "output"),
                 # (--seed orders a kit's points; run and bench time one graph: it did nothing)
                 "profile": ("kit", "out", "driver", "quiet", "seed")}
RESULT_FORMAT = "vitprune-edge-result"


def check_flags(command: str) -> None:
  """Refuses flags `command` does not read and output paths it could not write or would
  replace without owning them, before any work (ValueError / OSError, one line)."""
  known = {n for names in COMMAND_FLAGS.values() for n in names}
  unread = sorted(n for n in known - set(COMMAND_FLAGS[command]) if FLAGS[n].present)
  if unread:
    users = {n: [c for c, names in COMMAND_FLAGS.items() if n in names] for n in unread}
    raise ValueError("; ".join(f"--{n} is not read by {command} (only by {', '.join(users[n])})"
                               for n in unread))
  if FLAGS.output:
    if command == "run":                     # (the hazard first)
      check_not_read_as_an_image(FLAGS.output, FLAGS.images, "output", "images")
    atomic.check_output_json(FLAGS.output, RESULT_FORMAT, "output")
    runtime.check_not_in_records_folder(FLAGS.output, "output")
  if command == "profile" and FLAGS.out:
    if os.path.isdir(FLAGS.out):
      raise IsADirectoryError(f"--out={FLAGS.out} is a directory, not a file")
    if FLAGS.out.endswith(("/", os.sep)):         # wrote <dir>.json beside the folder meant
      raise ValueError(f"--out={FLAGS.out} ends in '/': that names a directory, not the "
                       "profile's .json file")
    if not FLAGS.out.endswith(".json"):            # board.csv became board.csv.json + .csv.csv
      raise ValueError(f"--out={FLAGS.out} must name the profile's .json file (its .csv twin "
                       "is written beside it)")
    if FLAGS.kit and atomic.is_within(FLAGS.out, FLAGS.kit):
      raise ValueError(f"--out={FLAGS.out} is inside the kit {FLAGS.kit}: write the profile "
                       "elsewhere (a kit holds only what edge_kit wrote)")
    kit_lib.out_stem(FLAGS.out)                    # ('dir/.json' names no file)
    runtime.check_not_in_records_folder(FLAGS.out, "out")
    stem = FLAGS.out[:-5]
    atomic.check_output_json(stem + ".json", records.FORMAT, "out", [stem + ".csv"])


def parse_flags(argv):
  """absl's parsing, with a bad flag reported as one `error:` line (exit 2) and --help exiting
  0 after the usage (absl exits 1), as the experiments CLIs do."""
  try:
    left = FLAGS(argv)
  except flags.Error as e:
    console.fail(e, console.EXIT_USAGE, hint=True)
  except SystemExit as e:
    console.exit_after_help(e)
  console.refuse_only_check_args(FLAGS)
  try:
    console.expand_home(FLAGS)
  except ValueError as e:
    console.fail(e)
  return left


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    console.fail(f"give one command: {' | '.join(COMMANDS)} (got {argv[1:]})",
                 console.EXIT_USAGE, hint=True)
  try:
    check_flags(argv[1])
    # What --output replaces, as this run began: results another run writes there meanwhile
    # are not; this run's are kept beside them (two runs into one file both said they wrote it)
    began = atomic.file_stamp(FLAGS.output) if FLAGS.output else None
    res = {"run": cmd_run, "bench": cmd_bench, "profile": cmd_profile}[argv[1]]()
    if FLAGS.output:
      atomic.replace_json_or_keep(FLAGS.output, dict(res, format=RESULT_FORMAT), RESULT_FORMAT,
                                  replaces=began, sort_keys=True)
      print(f"wrote {console.printable(FLAGS.output)}")
    console.finish_quietly()             # done: a signal from now on must not fail it, and
    console.raise_if_interrupted()       # one before (even swallowed by a callback) still does
  except (EdgeError, ValueError, FileNotFoundError, OSError, MemoryError,
          FloatingPointError) as e:
    if console.interrupted():    # a failure while the interrupt was held: both are said
      exit_interrupted(e)
    console.fail(e)
  except (KeyError, TypeError, AttributeError, IndexError) as e:   # a field the checks missed
    where = next((f"--{n}={FLAGS[n].value}" for n in ("kit", "artifact")
                  if n in FLAGS and FLAGS[n].value), "the input")     # (named by its flag)
    text = (f"{where}: a record or kit field is missing or of the wrong type "
            f"({type(e).__name__}: {e}); rebuild it with experiments.deploy / edge_kit")
    if console.interrupted():
      exit_interrupted(text)
    console.fail(text)
  except KeyboardInterrupt as e:    # (with the failure it was held during, if any)
    exit_interrupted(console.failure_of(e))


def exit_interrupted(error: Optional[object] = None):
  """`error: interrupted` (exit 130), or after SIGTERM / SIGHUP `error: terminated` (143) /
  `error: hung up` (129); `error`'s line with the interrupt in brackets when the run also
  failed; at once (`console.exit_interrupted`: the IREE runtime's teardown after an interrupt
  once kept the process alive a minute after its error line)."""
  console.exit_interrupted(error, cleanup=atomic.remove_exit_paths)


if __name__ == "__main__":
  console.setup_process()
  try:
    app.run(main, flags_parser=parse_flags)
  except KeyboardInterrupt:       # in absl's start-up, before main's own handler
    exit_interrupted()
