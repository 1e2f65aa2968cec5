r"""Classify an image folder with a deployment artifact and report its steady-state latency.

  python -m experiments.run_deployed --artifact=deploy/vit_digits_pomt --images=DIR

Needs only jax, orbax, PIL and the artifact (the model code is never imported). `--images` is a
labelled ImageFolder (`DIR/<class>/<img>`: accuracy is reported), a flat folder of images or one
image file.
Prints one line per file (`file<TAB>predicted index<TAB>class name<TAB>probability`, and for a
labelled folder `<TAB>label=<label index><TAB>label class name`),
then the accuracy and the latency of one batch: median and IQR over `--repeats` timed calls on a
device-resident batch, after the first call (compile + first run, reported separately) and
`--warmup` more untimed calls.
"""
from __future__ import annotations

import os

import jax
from absl import flags

from experiments import common
from vitprune import atomic
from vitprune import console
from vitprune import deploy
from vitprune import memory
from vitprune.edge import runtime
from vitprune.profile import protocol
from vitprune.data import (accuracy_line, check_images_flag,
                           check_not_read_as_an_image, per_image_time, prediction_accuracy,
                           prediction_line, prediction_rows, read_image_folder)
from vitprune.digits import check_digits_folder


RESULT_FORMAT = "vitprune-run-result"   # marks --output files this CLI may replace


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("artifact", None, "Artifact directory (python -m experiments.deploy).",
                      flag_values=fv)
  flags.DEFINE_string("images", None, "ImageFolder root, a flat folder of images or one image "
                      "file.", flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "Batch size: must equal the artifact's fixed batch; "
                       "free (default 8, or the number of images when fewer) for a symbolic-batch "
                       "artifact.", flag_values=fv)
  flags.DEFINE_integer("repeats", 20, "Timed calls for the latency (after the first call).",
                       flag_values=fv)
  flags.DEFINE_integer("warmup", 2, "Untimed calls after the first one, before timing.",
                       flag_values=fv)
  flags.DEFINE_integer("num_workers", 0, "Threads decoding images.", flag_values=fv)
  flags.DEFINE_string("output", None, "Optional JSON file for predictions and latency.",
                      flag_values=fv)
  flags.DEFINE_bool("quiet", False, "Do not print the per-file lines.", flag_values=fv)


def choose_batch_size(model_batch, requested):
  if model_batch is not None:
    if requested is not None and requested != model_batch:
      raise ValueError(f"the artifact was exported for batch size {model_batch}, "
                       f"--batch_size={requested} differs (re-export, or omit --batch_size)")
    return model_batch
  if requested is not None and requested < 1:
    raise ValueError(f"--batch_size must be >= 1, got {requested}")
  return requested or 8


def run(f: flags.FlagValues) -> dict:
  """Checks the flags and --output, classifies --images with the artifact and times one batch
  -> the result dict (what --output holds)."""
  if not f.artifact or not f.images:
    raise ValueError("--artifact and --images are required")
  timing_cfg = protocol.repeat_timing(f.repeats, f.warmup)
  if f.num_workers < 0:
    raise ValueError(f"--num_workers must be >= 0, got {f.num_workers}")
  if f.output:
    check_not_read_as_an_image(f.output, f.images, "output", "images")   # (the hazard first)
    atomic.check_output_json(f.output, RESULT_FORMAT)
    runtime.check_not_in_records_folder(f.output, "output")
  check_images_flag(f.images)
  with console.input_flag("--artifact", f.artifact):
    manifest = deploy.read_manifest(f.artifact)
  if not manifest.config.num_classes:
    raise ValueError(f"{f.artifact} outputs [B, {manifest.output_shape[-1]}] features (no "
                     "classification head, num_classes=0): run_deployed classifies images; "
                     "vitprune.load(path)(images) returns the features")
  bs = choose_batch_size(manifest.batch_size, f.batch_size)
  # Before loading (its weights are not yet in memory); the manifest's weight listing gives the
  # parameter count, so the model code is never imported.
  memory.check_batch_fits(manifest.config, [bs], manifest.dtype, schedule=manifest.schedule,
                          num_params=deploy.listed_param_count(manifest))
  check_digits_folder(f.images, runtime.weights_meta(manifest.to_json()),
                      f"the weights of {f.artifact}")     # (as estimate checks --weights)
  with console.input_flag("--artifact", f.artifact):
    model = deploy.load(f.artifact)
  dataset = read_image_folder(f.images, "--images", class_names=model.class_names,
                              num_classes=model.num_outputs)
  if manifest.batch_size is None and f.batch_size is None:  # (symbolic: 4 images timed at 8
    bs = min(bs, len(dataset))                               # reported twice the time per image)
  out = deploy.classify(model, dataset, bs, f.num_workers)
  names = model.class_names
  # (labels: model output indices, matched by class name)
  rows = prediction_rows(dataset.files, out["pred"], out["prob"], names,
                         dataset.labels.tolist() if dataset.labelled else None)
  result = {"artifact": model.path, "images": os.path.abspath(f.images),   # (one file: itself)
            "num_images": len(dataset), "model": model.manifest.model,
            "schedule": model.manifest.schedule_text,
            # (two results of one schedule in two dtypes, or on two devices, read alike)
            "dtype": model.manifest.dtype, "device_kind": str(jax.devices()[0].device_kind),
            "platform": jax.default_backend(), "predictions": rows,
            **prediction_accuracy(rows)}
  m = deploy.time_model(model, out["first_batch"], timing_cfg)
  note = protocol.wide_spread_note(m, timing_cfg)
  result["latency"] = {"median_s": m.median, "q25_s": m.q25, "q75_s": m.q75, "iqr_s": m.iqr,
                       "repeats": len(m.samples), "warmup": f.warmup,
                       "batch_size": int(out["first_batch"].shape[0]),
                       "samples_s": list(m.samples), "first_call_s": out["first_call_s"],
                       **({"note": note} if note else {})}
  return result


def main(f: flags.FlagValues) -> dict:
  # What --output replaces, as this run began: results another run writes there meanwhile are
  # not (two runs into one file both said they wrote it; one's results were gone).
  began = atomic.file_stamp(f.output) if f.output else None
  res = run(f)
  if not f.quiet:
    for r in res["predictions"]:
      print(prediction_line(r))
  lat = res["latency"]
  b = lat["batch_size"]
  print(f"model {res['model']} schedule {res['schedule']} ({res['dtype']}, {res['platform']} "
        f"{res['device_kind']}): {console.counted(res['num_images'], 'image')}")
  print(accuracy_line(res))
  print(f"latency batch {b}: median {lat['median_s'] * 1e3:.3f} ms (IQR "
        f"{lat['iqr_s'] * 1e3:.3f} ms, {lat['repeats']} repeats), "
        f"{per_image_time(lat['median_s'], b, res['num_images'])}; first call "
        f"{lat['first_call_s']:.3f} s")
  if "note" in lat:
    print(f"note: {lat['note']}")
  if f.output:
    common.write_result(f.output, dict(res, format=RESULT_FORMAT), RESULT_FORMAT,
                        replaces=began, sort_keys=True)
    print(f"wrote {common.shown(f.output)}")
  return res


if __name__ == "__main__":
  common.run(main, define_flags)
