"""Prune a ViT with a static token schedule; compare it with the unpruned model.

    python -m experiments.prune                       # vit_digits + digits test images, POMT
    python -m experiments.prune --method=tome --schedule=r8
    python -m experiments.prune --model=deit_small_patch16_224 --schedule=keep@3:120 --batch_size=8

Prints the tokens entering each block and leaving the last one, top-1 agreement of the pruned
model with the unpruned one on a batch of images (features: mean cosine similarity when the model
has no classifier head; top-1 accuracy too when the images are labelled), and the latency of both
compiled graphs on the local device (AOT compile, warm-up, `block_until_ready`, median and IQR of
`--repeats` runs, `vitprune.profile.timing`).

Data: `--weights=DIR` loads a checkpoint written by `vitprune.checkpoint.save_weights` (its config
replaces `--model`); `vit_digits` without weights uses the embedded `weights/vit_digits`; any
other `--model` gets random-init parameters (`--seed`). `--images=DIR` reads an image folder
(`vitprune.data.ImageFolder`, timm eval preprocessing); without it, `vit_digits` takes a batch of
the bundled digits test split and other models deterministic synthetic images.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

from absl import app
from absl import flags

from experiments import common
import jax
import numpy as np

from vitprune import data as data_lib
from vitprune import model as vit
from vitprune import schedule as S
from vitprune.config import ViTConfig
from vitprune.profile import timing
from vitprune.reduce import list_methods, make_reducer

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "vit_digits", "Registered model name (random-init weights, except "
                    "vit_digits: the embedded weights/vit_digits).")
flags.DEFINE_enum("method", "pomt", list_methods(), "Token-reduction method.")
flags.DEFINE_string("schedule", "", "Schedule text (see vitprune.schedule), e.g. keep@3:120, r8, "
                    "r8,-0.5, embed:150, list:...; empty: a method-appropriate default.")
flags.DEFINE_string("weights", "", "Checkpoint directory (vitprune.checkpoint.load_weights).")
flags.DEFINE_string("images", "", "Image folder (vitprune.data.ImageFolder); default synthetic.")
flags.DEFINE_integer("batch_size", 32, "Images in the batch.")
flags.DEFINE_integer("seed", 0, "Seed of random-init weights and synthetic images.")
flags.DEFINE_enum("dtype", "float32", sorted(vit.DTYPES), "Compute dtype.")
flags.DEFINE_integer("repeats", 20, "Timed runs per graph (median reported).")
flags.DEFINE_integer("warmup", 3, "Untimed runs per graph before timing.")
flags.DEFINE_integer("random_seed", 0, "Subset seed of --method=random.")
flags.DEFINE_bool("evit_normalize", False, "EViT: weighted mean instead of the paper's sum.")


def default_schedule(cfg: ViTConfig, method: str) -> S.Schedule:
  """A valid, modest schedule for any model: a quarter of the patches removed, at the embedding
  for 'random', with ToMe's r form for 'tome', else at block min(3, depth - 1) (POMT's default)."""
  remove = max(1, cfg.num_patches // 4)
  if method == "random":
    return S.drop_after_embedding(cfg, cfg.num_tokens - remove)
  if method == "tome":
    return S.remove_per_layer(cfg, max(1, -(-remove // cfg.depth)))
  return S.prune_at(cfg, remove=remove, layer=min(S.DEFAULT_POMT_LAYER, cfg.depth - 1))


def synthetic_images(cfg: ViTConfig, n: int, seed: int) -> np.ndarray:
  """[n, S, S, C] deterministic images: smooth random colour fields, normalised like the model's
  preprocessing (so their statistics resemble real inputs)."""
  rng = np.random.default_rng(seed)
  s, c = cfg.img_size, cfg.in_chans
  coarse = rng.uniform(0.0, 1.0, size=(n, 4, 4, c))
  rep = -(-s // 4)
  img = np.repeat(np.repeat(coarse, rep, axis=1), rep, axis=2)[:, :s, :s]
  img = np.clip(img + rng.normal(0.0, 0.1, size=img.shape), 0.0, 1.0)
  prep = cfg.preprocessing
  mean = np.asarray(prep.mean[:c], np.float32)
  std = np.asarray(prep.std[:c], np.float32)
  return ((img - mean) / std).astype(np.float32)


def load_images(cfg: ViTConfig, images_dir: str, batch_size: int, seed: int
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(images [B, S, S, C], labels [B] (-1 unknown), valid [B] bool) for one batch."""
  if images_dir:
    ds = data_lib.ImageFolder(images_dir)
    indices = np.arange(min(len(ds), batch_size))
  elif cfg.name == common.EMBEDDED_MODEL:
    ds = data_lib.digits_dataset()
    indices = data_lib.digits_split()[1][:batch_size]
  else:
    imgs = synthetic_images(cfg, batch_size, seed)
    return imgs, np.full(batch_size, -1, np.int32), np.ones(batch_size, bool)
  imgs, labels, idx = next(iter(data_lib.iterate_batches(ds, cfg.preprocessing, batch_size,
                                                         indices=indices)))
  return imgs, labels, data_lib.batch_valid_mask(idx)


def _compile(params, images, **static):
  """AOT-compiles the forward for `static` -> (executable, seconds)."""
  return timing.compile_fn(functools.partial(vit.forward, **static), params, images)


def time_compiled(compiled, params, images, *, warmup: int, repeats: int) -> Dict[str, float]:
  """Median / IQR seconds of `repeats` calls of `compiled(params, images)` (device-resident
  inputs), with the profiler's timing protocol."""
  cfg = timing.TimingConfig(min_run_time=1e-9, warmup=warmup, min_reps=max(3, repeats),
                            max_reps=max(3, repeats))
  m = timing.summarize(timing.time_calls(compiled, (params, images), cfg))
  return {"median_s": m.median, "iqr_s": m.iqr}


def agreement(pruned: np.ndarray, full: np.ndarray, valid: np.ndarray, classifier: bool) -> float:
  """Top-1 agreement of logits [B, K] (or mean cosine similarity of features [B, C])."""
  pruned, full = pruned[valid], full[valid]
  if classifier:
    return float(np.mean(pruned.argmax(-1) == full.argmax(-1)))
  num = (pruned * full).sum(-1)
  den = np.linalg.norm(pruned, axis=-1) * np.linalg.norm(full, axis=-1)
  return float(np.mean(num / np.maximum(den, 1e-12)))


def run_prune(cfg: ViTConfig, params, images: np.ndarray, *, method: str,
              schedule: Optional[S.Schedule], labels: Optional[np.ndarray] = None,
              valid: Optional[np.ndarray] = None, dtype: str = "float32", warmup: int = 3,
              repeats: int = 20, reducer_options: Optional[Dict[str, Any]] = None
              ) -> Dict[str, Any]:
  """Compiles, runs and times the unpruned and the pruned forward on `images` [B, S, S, C]."""
  if repeats < 1 or warmup < 0:
    raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
  reducer = make_reducer(method, **(reducer_options or {}))
  schedule = default_schedule(cfg, method) if schedule is None else schedule
  S.check_schedule(cfg, schedule, reducer)
  b = images.shape[0]
  valid = np.ones(b, bool) if valid is None else np.asarray(valid, bool)
  labels = np.full(b, -1) if labels is None else np.asarray(labels)
  params = jax.device_put(params)
  x = jax.device_put(np.asarray(images, np.float32))
  full_fn, full_compile = _compile(params, x, cfg=cfg, dtype=dtype)
  pruned_fn, pruned_compile = _compile(params, x, cfg=cfg, schedule=schedule, reducer=reducer,
                                       dtype=dtype)
  full_out, pruned_out = np.asarray(full_fn(params, x)), np.asarray(pruned_fn(params, x))
  if not np.isfinite(pruned_out).all():
    raise FloatingPointError(f"the pruned {cfg.name} produced non-finite outputs")
  classifier = cfg.num_classes > 0
  result = {
      "model": cfg.name, "method": method, "reducer": repr(reducer), "dtype": dtype,
      "batch": int(b), "device": jax.devices()[0].device_kind,
      "schedule": S.format_schedule(schedule, cfg), "counts": list(schedule.counts),
      "metric": "top1_agreement" if classifier else "feature_cosine",
      "agreement": agreement(pruned_out, full_out, valid, classifier),
      "full": dict(time_compiled(full_fn, params, x, warmup=warmup, repeats=repeats),
                   compile_s=full_compile),
      "pruned": dict(time_compiled(pruned_fn, params, x, warmup=warmup, repeats=repeats),
                     compile_s=pruned_compile),
  }
  labelled = valid & (labels >= 0)
  if classifier and labelled.any():
    result["accuracy_full"] = float(np.mean(full_out[labelled].argmax(-1) == labels[labelled]))
    result["accuracy_pruned"] = float(np.mean(pruned_out[labelled].argmax(-1) ==
                                              labels[labelled]))
  return result


def format_result(r: Dict[str, Any]) -> str:
  c = r["counts"]
  lines = [f"{r['model']}  method={r['method']}  schedule={r['schedule']}  batch={r['batch']}  "
           f"dtype={r['dtype']}  device={r['device']}",
           "tokens entering block: " + " ".join(f"{l}:{n}" for l, n in enumerate(c[:-1])) +
           f"  | leaving the last: {c[-1]}"]
  name = "top-1 agreement" if r["metric"] == "top1_agreement" else "feature cosine similarity"
  lines.append(f"{name} with the unpruned model: {r['agreement']:.4f}")
  if "accuracy_full" in r:
    lines.append(f"top-1 accuracy: unpruned {r['accuracy_full']:.4f}, pruned "
                 f"{r['accuracy_pruned']:.4f}")
  for k in ("full", "pruned"):
    t = r[k]
    lines.append(f"latency {k:>6}: {t['median_s'] * 1e3:9.3f} ms median (IQR "
                 f"{t['iqr_s'] * 1e3:.3f} ms), compile {t['compile_s']:.2f} s")
  lines.append(f"speed-up: {r['full']['median_s'] / r['pruned']['median_s']:.3f}x")
  return "\n".join(lines)


def main(argv):
  common.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.batch_size < 1:
    raise app.UsageError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
  try:
    cfg, params, _ = common.load_model(FLAGS.model, FLAGS.weights, FLAGS.seed)
    schedule = S.parse_schedule(cfg, FLAGS.schedule) if FLAGS.schedule else None
    images, labels, valid = load_images(cfg, FLAGS.images, FLAGS.batch_size, FLAGS.seed)
    options = {"random": {"seed": FLAGS.random_seed},
               "evit": {"normalize": FLAGS.evit_normalize}}.get(FLAGS.method, {})
    result = run_prune(cfg, params, images, method=FLAGS.method, schedule=schedule,
                       labels=labels, valid=valid, dtype=FLAGS.dtype, warmup=FLAGS.warmup,
                       repeats=FLAGS.repeats, reducer_options=options)
  except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  print(format_result(result))


if __name__ == "__main__":
  app.run(main)
