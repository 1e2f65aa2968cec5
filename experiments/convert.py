"""Convert a timm / DINOv2 / big_vision checkpoint into a vitprune weights directory.

  python -m experiments.convert --model=deit_small_patch16_224 \
      --checkpoint=deit_small.safetensors [--img_size=224] [--num_classes=1000] \
      [--out=weights/deit_small_patch16_224] [--overwrite] [--verify]

Prints the parameter count and the output directory; with --verify, also runs the converted model
on a fixed input. Errors (unknown model, missing/corrupted file, key mismatches) exit with status 1
and a message on stderr, without a traceback.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from absl import app, flags

from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "timm model name (see vitprune.registry.list_models()).")
flags.DEFINE_string("checkpoint", None, "Checkpoint file: .safetensors, .pth/.pt/.bin (needs "
                    "torch), or .npz (AugReg / big_vision, or timm names).")
flags.DEFINE_integer("img_size", None, "Input size to convert for (position embeddings are "
                     "resampled like timm); default: the model's native size.")
flags.DEFINE_integer("num_classes", None, "Classes of the head; 0 = features only (needs "
                     "--drop_head if the checkpoint has a head). Default: the registry's.")
flags.DEFINE_string("out", None, "Output directory; default weights/<model> (weights/<model>_"
                    "<img_size> at a non-native size).")
flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")
flags.DEFINE_bool("drop_head", False, "Discard the checkpoint's head/head_dist.")
flags.DEFINE_list("ignore_keys", [], "fnmatch patterns of checkpoint keys to discard, e.g. "
                  "mask_token for original DINOv2 checkpoints.")
flags.DEFINE_bool("verify", False, "Run the converted model on a fixed input.")


def default_out(model: str, img_size: Optional[int], native: int) -> str:
  suffix = f"_{img_size}" if img_size and img_size != native else ""
  return os.path.join("weights", f"{model}{suffix}")


def run(model: str, checkpoint: str, *, img_size: Optional[int] = None,
        num_classes: Optional[int] = None, out: Optional[str] = None, overwrite: bool = False,
        drop_head: bool = False, ignore_keys: Sequence[str] = (), verify: bool = False) -> str:
  """Converts and saves; returns the output directory. Raises on any problem."""
  import numpy as np
  from vitprune.convert import convert_checkpoint, count_params
  from vitprune.registry import get_config

  base = get_config(model)  # KeyError with close-name suggestions
  overrides = {}
  if img_size is not None:
    overrides["img_size"] = img_size
  if num_classes is not None:
    overrides["num_classes"] = num_classes
  cfg = base.replace(**overrides) if overrides else base
  out = out or default_out(model, img_size, base.img_size)
  path, params, meta = convert_checkpoint(cfg, checkpoint, out, overwrite=overwrite,
                                          drop_head=drop_head, ignore_keys=ignore_keys,
                                          verify=verify)
  print(f"converted {meta['source_file']} ({meta['source_format']}, sha256 "
        f"{meta['source_sha256'][:12]}) -> {path}")
  print(f"{cfg.name}: {count_params(params):,} parameters, img_size {cfg.img_size}, "
        f"num_classes {cfg.num_classes}")
  if "pos_embed_resampled" in meta:
    r = meta["pos_embed_resampled"]
    print(f"pos_embed resampled {tuple(r['from'])} -> {tuple(r['to'])} ({r['interpolation']}, "
          f"antialias={r['antialias']})")
  if verify:
    v = meta["verified"]
    print(f"verify: {v['kind']} {tuple(v['shape'])}, mean {v['mean']:+.6f}, std {v['std']:.6f}"
          + (f", top-1 class {v['top1']}" if v.get("top1") is not None else ""))
  return path


def main(argv):
  common.quiet_logging()
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.model or not FLAGS.checkpoint:
    print("error: --model and --checkpoint are required", file=sys.stderr)
    return 1
  try:
    run(FLAGS.model, FLAGS.checkpoint, img_size=FLAGS.img_size, num_classes=FLAGS.num_classes,
        out=FLAGS.out, overwrite=FLAGS.overwrite, drop_head=FLAGS.drop_head,
        ignore_keys=FLAGS.ignore_keys, verify=FLAGS.verify)
  except KeyError as e:  # unknown model: the message carries the suggestions
    print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
    return 1
  except (FileNotFoundError, FileExistsError, ImportError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
