"""Prune a ViT with a static token schedule; compare it with the unpruned model.

    python -m experiments.prune                       # vit_digits + digits test images, POMT
    python -m experiments.prune --method=tome --schedule=r8
    python -m experiments.prune --model=deit_small_patch16_224 --schedule=keep@3:120 --batch_size=8

Prints the tokens entering each block and leaving the last one, top-1 agreement of the pruned
model with the unpruned one on a batch of images (features: mean cosine similarity when the model
has no classifier head; top-1 accuracy too when the images are labelled), and the latency of both
compiled graphs on the local device (AOT compile, warm-up, `block_until_ready`, median and IQR of
`--repeats` runs, the two graphs interleaved in up to 5 rounds, `vitprune.profile.timing`). The
work is `vitprune.prune.run_prune`; this file parses flags, loads the model and images, and
prints.

Data: `--weights=DIR` loads a checkpoint written by `vitprune.checkpoint.save_weights` (its config
replaces `--model`); `vit_digits` without weights uses the embedded `weights/vit_digits`; any
other `--model` gets random-init parameters (`--seed`). `--images=DIR` reads an image folder,
or one image file (`vitprune.data.ImageFolder`, timm eval preprocessing); without it,
`vit_digits` takes a batch of the bundled digits test split and other models deterministic
synthetic images.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from experiments import common
from vitprune import data as data_lib
from vitprune import digits as digits_lib
from vitprune import estimate as estimate_lib
from vitprune import intervals
from vitprune import memory
from vitprune import model as vit
from vitprune import schedule as S
from vitprune.profile import protocol
from vitprune.config import ViTConfig, method_label
from vitprune.console import counted
from vitprune.prune import run_prune
from vitprune.reduce import list_methods


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("model", "vit_digits", "Registered model name (random-init weights, except "
                      "vit_digits: the embedded weights/vit_digits).", flag_values=fv)
  flags.DEFINE_enum("method", "pomt", list_methods(), "Token-reduction method.", flag_values=fv)
  flags.DEFINE_string("schedule", "", "Schedule text (see vitprune.schedule), e.g. keep@3:120, r8, "
                      "r8,-0.5, embed:150, list:...; empty: a method-appropriate default.",
                      flag_values=fv)
  flags.DEFINE_string("weights", "", "Checkpoint directory (vitprune.checkpoint.load_weights).",
                      flag_values=fv)
  flags.DEFINE_string("images", "", "Image folder or one image file "
                      "(vitprune.data.ImageFolder); default: the "
                      "first --batch_size test digits for vit_digits, deterministic synthetic "
                      "images for other models.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 32, "Images in the batch.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of random-init weights, synthetic images and the "
                       "sample of a larger --images folder.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", sorted(vit.DTYPES), "Compute dtype.", flag_values=fv)
  flags.DEFINE_integer("repeats", 20, "Timed runs per graph (median reported).", flag_values=fv)
  flags.DEFINE_integer("warmup", 3, "Untimed runs per graph before each of its timing rounds "
                       "(the two graphs are timed interleaved, in up to 5 rounds).",
                       flag_values=fv)
  flags.DEFINE_integer("random_seed", 0, "Subset seed of --method=random.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_bool("random_nested", True, "--method=random: one nested random elimination "
                    "order (--norandom_nested: each block draws its own subset, random drop "
                    "before 2026-12-05).", flag_values=fv)
  flags.DEFINE_bool("evit_normalize", False, "EViT: weighted mean instead of the paper's sum.",
                    flag_values=fv)


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


def load_images(cfg: ViTConfig, images_dir: str, batch_size: int, seed: int,
                class_names: Optional[Sequence[str]] = None
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
  """(images [B, S, S, C], labels [B] (-1 unknown), valid [B] bool, which images in words) for
  one batch. Image-folder labels are matched to the model's `class_names` by name; a folder
  with more than B images gives a seeded sample of B (class-balanced when labelled; never "the
  first B files", which are one class)."""
  headless = not cfg.num_classes       # compared by features: labels are not used
  if images_dir:
    ds = data_lib.read_image_folder(images_dir, "--images",   # (prune's --images)
                                    class_names=None if headless else class_names,
                                    num_classes=None if headless else cfg.num_classes)
    if len(ds) <= batch_size:
      indices, note = np.arange(len(ds)), (f"all {len(ds)} images of {images_dir}"
                                         if len(ds) > 1 else f"the one image of {images_dir}")
    else:
      indices = estimate_lib.subset_indices(ds.labels, ds.labelled, batch_size, seed)
      note = (f"{batch_size} of the {len(ds)} images of {images_dir} "
              f"({'class-balanced ' if ds.labelled else ''}sample, seed {seed})")
  elif cfg.name == common.EMBEDDED_MODEL:
    ds = (digits_lib.digits_dataset() if headless else
          digits_lib.digits_for_model(class_names, cfg.num_classes))
    indices = digits_lib.digits_split()[1][:batch_size]
    note = ("the first test digit" if len(indices) == 1 else
            f"the first {len(indices)} test digits")
  else:
    imgs = synthetic_images(cfg, batch_size, seed)
    return (imgs, np.full(batch_size, -1, np.int32), np.ones(batch_size, bool),
            f"{counted(batch_size, 'synthetic image')} (seed {seed})")
  if len(indices) < batch_size:     # (a batch of 1000 timed 641 padding images, unsaid)
    note = (f"{note}, padded with {counted(batch_size - len(indices), 'zero image')} to the "
            f"batch of {batch_size} for timing (compared on the {len(indices)} alone)")
  imgs, labels, idx = next(iter(data_lib.iterate_batches(ds, cfg.preprocessing, batch_size,
                                                         indices=indices)))
  if headless:
    labels, note = np.full_like(labels, -1), f"{note}, labels unused (no classifier head)"
  elif images_dir and not ds.labelled:      # (a flat folder gave agreement alone, unsaid)
    note = f"{note}; {data_lib.UNLABELLED_NOTE}"
  return imgs, labels, data_lib.batch_valid_mask(idx), note


def format_result(r: Dict[str, Any]) -> str:
  c = r["counts"]
  method = method_label(r["method"], r.get("options"))
  lines = [f"{r['model']}  method={method}  schedule={r['schedule']}  batch={r['batch']}  "
           f"dtype={r['dtype']}  device={r['device']}",
           "tokens entering block: " + " ".join(f"{l}:{n}" for l, n in enumerate(c[:-1])) +
           f"  | leaving the last: {c[-1]}"]
  name = "top-1 agreement" if r["metric"] == "top1_agreement" else "feature cosine similarity"
  lines.append(f"{name} with the unpruned model: {r['agreement']:.4f}")
  if "accuracy_full" in r:
    lines.append(f"top-1 accuracy: unpruned {r['accuracy_full']:.4f}, pruned "
                 f"{r['accuracy_pruned']:.4f}"
                 + ("" if "accuracy_change" not in r else
                    f"; change {intervals.describe_change(r['accuracy_change'])}"))
  for k in ("full", "pruned"):
    t = r[k]
    lines.append(f"latency {k:>6}: {t['median_s'] * 1e3:9.3f} ms median per batch of "
                 f"{r['batch']} (IQR "
                 f"{t['iqr_s'] * 1e3:.3f} ms), compile {t['compile_s']:.2f} s")
  full, pruned = r["full"], r["pruned"]
  lines.append(f"speed-up: {full['median_s'] / pruned['median_s']:.3f}x"
               + protocol.spread_mark(full["median_s"], full["iqr_s"], pruned["median_s"],
                                      pruned["iqr_s"]))
  return "\n".join(lines)


def main(f: flags.FlagValues):
  """Checks the flags, loads the model and one batch, prunes, prints the comparison."""
  common.positive(f.batch_size, "batch_size")
  common.positive(f.repeats, "repeats")
  protocol.repeat_timing(f.repeats, f.warmup)   # (1 or 2 timed 3 runs, unsaid), before any work
  for flag, method in (("random_seed", "random"), ("random_nested", "random"),
                       ("evit_normalize", "evit")):
    if f[flag].present and f.method != method:
      raise ValueError(f"--{flag} applies to --method={method} only, not --method={f.method}")
  if f.images:
    data_lib.check_images_flag(f.images)
  cfg = common.model_config(common.given_model(f), f.weights)
  schedule = S.parse_schedule(cfg, f.schedule) if f.schedule else None
  if schedule is not None and not S.reduces_tokens(cfg, schedule):   # (a "speed-up" of noise)
    raise ValueError(f"--schedule {f.schedule!r} does not reduce any token: the pruned model "
                     "would be the unpruned one, timed against itself")
  memory.check_batch_fits(cfg, [f.batch_size], f.dtype)
  seeds = ("it seeds random-init weights, synthetic images and the sample of an --images folder "
           "larger than --batch_size")
  if (f["seed"].present and not f.images and cfg.name == common.EMBEDDED_MODEL):
    raise ValueError(f"--seed={f.seed} changes nothing here: {cfg.name} has trained weights "
                     f"and is run on the first test digits; {seeds}")
  if f["seed"].present and f.images and (f.weights or cfg.name == common.EMBEDDED_MODEL):
    with warnings.catch_warnings():        # (its warnings: said once, when it is read below)
      warnings.simplefilter("ignore")
      # (trained weights, every image: unread)
      held = len(data_lib.read_image_folder(f.images, "--images"))
    if held <= f.batch_size:
      raise ValueError(f"--seed={f.seed} changes nothing here: the weights are trained and all "
                       f"{held} images of --images fit in --batch_size={f.batch_size}; {seeds}")
  cfg, params, source = common.load_model(common.given_model(f), f.weights, f.seed)
  common.check_digits_split(source, os.path.abspath(f.images) if f.images else "digits",
                            bundled="the bundled digits (prune without --images)")
  images, labels, valid, note = load_images(cfg, f.images, f.batch_size, f.seed,
                                            common.class_names(source))
  options = {"random": {"seed": f.random_seed, "nested": f.random_nested},
             "evit": {"normalize": f.evit_normalize}}.get(f.method, {})
  result = run_prune(cfg, params, images, method=f.method, schedule=schedule, labels=labels,
                     valid=valid, dtype=f.dtype, warmup=f.warmup, repeats=f.repeats,
                     reducer_options=options)
  result["images"], result["weights"] = note, source
  print(format_result(result))
  print(f"images: {common.shown(note)}")
  print(f"weights: {common.shown(source)}" + (" (random-init, not trained: the agreement "
                                              "compares two untrained graphs)"
                                              if common.is_random_init(source) else ""))
  return result


if __name__ == "__main__":
  common.run(main, define_flags)
