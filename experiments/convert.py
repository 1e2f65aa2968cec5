r"""Convert a timm / DINOv2 / big_vision checkpoint into a vitprune weights directory.

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

from absl import flags

from experiments import common
from vitprune import checkpoint
from vitprune import console
from vitprune import memory
from vitprune.convert import check_checkpoint_path, convert_checkpoint, count_params
from vitprune.registry import get_config


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv` (only when run as a script, or into a fresh FlagValues
  via `common.parse`)."""
  flags.DEFINE_string("model", None, "timm model name (see vitprune.registry.list_models()).",
                      flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "Checkpoint file: .safetensors, .pth/.pt/.bin (needs "
                      "torch), or .npz (AugReg / big_vision, or timm names).", flag_values=fv)
  flags.DEFINE_integer("img_size", None, "Input size to convert for (position embeddings are "
                       "resampled like timm); default: the model's native size.", flag_values=fv)
  flags.DEFINE_integer("num_classes", None, "Classes of the head; 0 = features only (needs "
                       "--drop_head if the checkpoint has a head). Default: the registry's.",
                       flag_values=fv)
  flags.DEFINE_string("out", None, "Output directory; default weights/<model> (weights/<model>_"
                      "<img_size> at a non-native size).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=fv)
  flags.DEFINE_bool("drop_head", False, "Discard the checkpoint's head/head_dist, for "
                    "--num_classes=0 (refused when it has none, or with classes).",
                    flag_values=fv)
  flags.DEFINE_list("ignore_keys", [], "fnmatch patterns of checkpoint keys to discard, e.g. "
                    "mask_token for original DINOv2 checkpoints (each must match a key).",
                    flag_values=fv)
  flags.DEFINE_bool("verify", False, "Run the converted model on a fixed input.", flag_values=fv)


def default_out(model: str, img_size: Optional[int], native: int) -> str:
  suffix = f"_{img_size}" if img_size and img_size != native else ""
  return os.path.join("weights", f"{model}{suffix}")


def run(model: str, checkpoint: str, *, img_size: Optional[int] = None,
        num_classes: Optional[int] = None, out: Optional[str] = None, overwrite: bool = False,
        drop_head: bool = False, ignore_keys: Sequence[str] = (), verify: bool = False) -> str:
  """Converts and saves; returns the output directory. Raises on any problem."""
  base = get_config(model)  # KeyError with close-name suggestions
  overrides = {}
  if img_size is not None:
    overrides["img_size"] = img_size
  if num_classes is not None:
    overrides["num_classes"] = num_classes
  cfg = base.replace(**overrides) if overrides else base
  out = out or default_out(model, img_size, base.img_size)
  if img_size is not None:      # before reading the checkpoint, not numpy's bare MemoryError
    memory.check_conversion_fits(cfg, what=f"--img_size={img_size}")
  if verify:   # one forward at batch 2: before any work, not out of memory after the conversion
    memory.check_batch_fits(cfg, [2], "float32", what="--verify (two images through the model)")
  path, params, meta = convert_checkpoint(cfg, checkpoint, out, overwrite=overwrite,
                                          drop_head=drop_head, ignore_keys=ignore_keys,
                                          verify=verify)
  print(f"converted {common.shown(meta['source_file'])} ({meta['source_format']}, sha256 "
        f"{meta['source_sha256'][:12]}) -> {common.shown(path)}")
  print(f"{cfg.name}: {count_params(params):,} parameters, img_size {cfg.img_size}, "
        f"num_classes {cfg.num_classes}")
  if meta["source_dtypes"] != ["float32"]:     # (the weights hold float32 values either way)
    wider = [d for d in meta["source_dtypes"] if d in ("float64", "float128", "longdouble")]
    print(f"note: the checkpoint holds {', '.join(meta['source_dtypes'])} tensors: converted to "
          + (f"float32 (its {', '.join(wider)} values rounded to float32)" if wider else
             "float32 (the values as the file held them, no precision gained)"))
  if "pos_embed_resampled" in meta:
    r = meta["pos_embed_resampled"]
    print(f"pos_embed resampled {tuple(r['from'])} -> {tuple(r['to'])} ({r['interpolation']}, "
          f"antialias={r['antialias']})")
  if verify:
    v = meta["verified"]
    print(f"verify: {v['kind']} {tuple(v['shape'])}, mean {v['mean']:+.6f}, std {v['std']:.6f}"
          + (f", top-1 class {v['top1']}" if v.get("top1") is not None else ""))
    if v["input_independent"]:
      print(f"warning: verify: the {v['kind']} are the same for two different images: the model "
            "ignores its input (a zeroed head, as a checkpoint made for fine-tuning has, or "
            "weights that did not load as meant)", file=sys.stderr)
    elif v.get("classes_tied"):        # (one head value, its images' logits apart)
      print(f"warning: verify: all {v['shape'][-1]} logits are one value: every class ties and "
            f"top-1 class {v['top1']} is an arbitrary pick (a head that did not load as meant)",
            file=sys.stderr)
  return path


def main(f: flags.FlagValues) -> str:
  """Checks the flags and the output directory, then converts."""
  if not f.model or not f.checkpoint:
    raise ValueError("--model and --checkpoint are required")
  if f.img_size is not None and f.img_size < 1:
    raise ValueError(f"--img_size must be >= 1, got {f.img_size}")
  if f.num_classes is not None and f.num_classes < 0:
    raise ValueError(f"--num_classes must be >= 0, got {f.num_classes}")
  base = get_config(f.model)  # KeyError with close-name suggestions
  out = f.out if f.out is not None else default_out(f.model, f.img_size, base.img_size)
  with console.input_flag("--checkpoint", f.checkpoint):   # (before "--out exists: --overwrite")
    check_checkpoint_path(f.checkpoint)
  common.check_new_dir(out, "out", overwrite=f.overwrite, is_ours=checkpoint.is_weights_dir)
  return run(f.model, f.checkpoint, img_size=f.img_size, num_classes=f.num_classes, out=out,
             overwrite=f.overwrite, drop_head=f.drop_head, ignore_keys=f.ignore_keys,
             verify=f.verify)


if __name__ == "__main__":
  common.run(main, define_flags)
