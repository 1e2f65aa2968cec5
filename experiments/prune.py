"""Prune a ViT with a static token schedule; compare it with the unpruned model.

    python -m experiments.prune                       # vit_digits + digits test images, POMT
    python -m experiments.prune --method=tome --schedule=r8
    python -m experiments.prune --model=deit_small_patch16_224 --schedule=keep@3:120 --batch_size=8

Prints the tokens entering each block and leaving the last one, top-1 agreement of the pruned
model with the unpruned one on a batch of images (features: mean cosine similarity when the model
has no classifier head; top-1 accuracy too when the images are labelled), and the latency of both
compiled graphs on the local device (AOT compile, warm-up, `block_until_ready`, median and IQR of
`--repeats` runs, `vitprune.profile.timing`). The work is `vitprune.prune.run_prune`; this file
parses flags, loads the model and images, and prints.

Data: `--weights=DIR` loads a checkpoint written by `vitprune.checkpoint.save_weights` (its config
replaces `--model`); `vit_digits` without weights uses the embedded `weights/vit_digits`; any
other `--model` gets random-init parameters (`--seed`). `--images=DIR` reads an image folder
(`vitprune.data.ImageFolder`, timm eval preprocessing); without it, `vit_digits` takes a batch of
the bundled digits test split and other models deterministic synthetic images.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from absl import app
from absl import flags

from experiments import common
import numpy as np

from vitprune import data as data_lib
from vitprune import model as vit
from vitprune import schedule as S
from vitprune.config import ViTConfig
from vitprune.prune import run_prune
from vitprune.reduce import list_methods

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
