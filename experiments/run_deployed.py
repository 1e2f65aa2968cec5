r"""Classify an image folder with a deployment artifact and report its steady-state latency.

  python -m experiments.run_deployed --artifact=deploy/vit_digits_pomt --images=DIR

Needs only jax, orbax, PIL and the artifact (the model code is never imported). `--images` is a
labelled ImageFolder (`DIR/<class>/<img>`: accuracy is reported) or a flat folder of images.
Prints one line per file (`file<TAB>predicted index<TAB>class name<TAB>probability[<TAB>label]`),
then the accuracy and the latency of one batch: median and IQR over `--repeats` timed calls on a
device-resident batch, after the first call (compile + first run, reported separately) and
`--warmup` more untimed calls.
"""
from __future__ import annotations

import time

from absl import flags
import jax
import numpy as np

from experiments import common
from vitprune import atomic
from vitprune.data import ImageFolder, iterate_batches
from vitprune.deploy import load


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("artifact", None, "Artifact directory (python -m experiments.deploy).", flag_values=fv)
  flags.DEFINE_string("images", None, "ImageFolder root or a flat folder of images.", flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "Batch size: must equal the artifact's fixed batch; "
                       "free (default 8) for a symbolic-batch artifact.", flag_values=fv)
  flags.DEFINE_integer("repeats", 20, "Timed calls for the latency (after the first call).", flag_values=fv)
  flags.DEFINE_integer("warmup", 2, "Untimed calls after the first one, before timing.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 0, "Threads decoding images.", flag_values=fv)
  flags.DEFINE_string("output", None, "Optional JSON file for predictions and latency.", flag_values=fv)
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


def label_map(folder_classes, class_names, num_outputs):
  """Folder label index -> model output index (by name when the artifact names its classes)."""
  if class_names and all(c in class_names for c in folder_classes):
    return [class_names.index(c) for c in folder_classes]
  if len(folder_classes) > num_outputs:
    raise ValueError(f"the image folder has {len(folder_classes)} classes but the model has "
                     f"only {num_outputs} outputs")
  return list(range(len(folder_classes)))  # torchvision convention: sorted folder order


def check_timing(repeats: int, warmup: int) -> None:
  if repeats < 3:
    raise ValueError(f"--repeats must be >= 3 for a median and an IQR, got {repeats}")
  if warmup < 0:
    raise ValueError(f"--warmup must be >= 0, got {warmup}")


def time_model(model, images, *, repeats: int, warmup: int) -> dict:
  """Steady-state latency of `model(images)` in seconds: median / IQR of `repeats` timed calls
  on device-resident images after `warmup` untimed ones (`model` has been called before)."""
  check_timing(repeats, warmup)
  x = jax.device_put(images)
  for _ in range(warmup):
    jax.block_until_ready(model(x))
  samples = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(model(x))
    samples.append(time.perf_counter() - t0)
  q25, med, q75 = np.percentile(samples, [25, 50, 75])
  return {"median_s": float(med), "q25_s": float(q25),
          "q75_s": float(q75), "iqr_s": float(q75 - q25), "repeats": repeats,
          "warmup": warmup, "batch_size": int(images.shape[0]),
          "samples_s": [float(s) for s in samples]}


def classify(model, dataset, batch_size: int, num_workers: int = 0) -> dict:
  """Predictions for every file of `dataset` (index, max softmax probability), the first batch
  (for timing) and the wall time of the first call (compilation + first run)."""
  preds, probs, first, first_s = [], [], None, None
  for images, _, idx in iterate_batches(dataset, model.preprocessing, batch_size,
                                        num_workers=num_workers):
    t0 = time.perf_counter()
    logits = np.asarray(model(images), np.float64)
    if first is None:
      first, first_s = images, time.perf_counter() - t0
    valid = idx >= 0
    z = np.exp(logits - logits.max(-1, keepdims=True))
    p = z / z.sum(-1, keepdims=True)
    preds.extend(np.argmax(logits, -1)[valid].tolist())
    probs.extend(p.max(-1)[valid].tolist())
  return {"pred": preds, "prob": probs, "first_batch": first, "first_call_s": first_s}


def run(f: flags.FlagValues) -> dict:
  """Checks the flags and --output, classifies --images with the artifact and times one batch
  -> the result dict (what --output holds)."""
  if not f.artifact or not f.images:
    raise ValueError("--artifact and --images are required")
  check_timing(f.repeats, f.warmup)
  if f.num_workers < 0:
    raise ValueError(f"--num_workers must be >= 0, got {f.num_workers}")
  if f.output:
    common.check_output_file(f.output)
  model = load(f.artifact)
  bs = choose_batch_size(model.batch_size, f.batch_size)
  dataset = ImageFolder(f.images, class_names=model.class_names, num_classes=model.num_outputs)
  out = classify(model, dataset, bs, f.num_workers)
  names = model.class_names
  rows = []
  for i, (p, prob) in enumerate(zip(out["pred"], out["prob"])):
    rows.append({"file": dataset.files[i], "pred": int(p),
                 "class": names[p] if names else str(p), "prob": float(prob),
                 "label": None})
  result = {"artifact": model.path, "images": dataset.root, "num_images": len(dataset),
            "model": model.manifest.model,
            "schedule": model.manifest.schedule_text, "predictions": rows,
            "accuracy": None}
  if dataset.labelled:
    mapping = label_map(dataset.classes, names, model.num_outputs)
    labels = [mapping[l] for l in dataset.labels.tolist()]
    for r, l in zip(rows, labels):
      r["label"] = l
    result["accuracy"] = sum(r["pred"] == r["label"] for r in rows) / len(rows)
  result["latency"] = time_model(model, out["first_batch"], repeats=f.repeats,
                                 warmup=f.warmup)
  result["latency"]["first_call_s"] = out["first_call_s"]
  return result


def main(f: flags.FlagValues) -> dict:
  res = run(f)
  if not f.quiet:
    for r in res["predictions"]:
      extra = "" if r["label"] is None else f"\tlabel={r['label']}"
      print(f"{r['file']}\t{r['pred']}\t{r['class']}\t{r['prob']:.4f}{extra}")
  lat = res["latency"]
  b = lat["batch_size"]
  print(f"model {res['model']} schedule {res['schedule']}: {res['num_images']} images")
  if res["accuracy"] is not None:
    n_ok = sum(r["pred"] == r["label"] for r in res["predictions"])
    print(f"accuracy {res['accuracy']:.4f} ({n_ok}/{res['num_images']})")
  print(f"latency batch {b}: median {lat['median_s'] * 1e3:.3f} ms (IQR "
        f"{lat['iqr_s'] * 1e3:.3f} ms, {lat['repeats']} repeats), "
        f"{lat['median_s'] * 1e3 / b:.3f} ms/image; first call {lat['first_call_s']:.3f} s")
  if f.output:
    atomic.write_json(f.output, res, sort_keys=True)
    print(f"wrote {f.output}")
  return res


if __name__ == "__main__":
  common.run(main, define_flags)
