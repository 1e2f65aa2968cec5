r"""Trains the embedded default model `vit_digits` on scikit-learn's bundled 8x8 digits.

The training itself is `vitprune.train` (the very `vitprune.model.forward` the library prunes,
no pruning while training); this CLI checks its flags, runs it and saves the checkpoint.
Images go through `vitprune.digits.digits_preprocessing` (the eval path; 32x32 RGB), training adds
random shifts of up to `--max_shift` pixels (filled with the background value). Optimiser: AdamW
with linear warm-up + cosine decay, gradient clipping, optional label smoothing; weight decay is
not applied to biases, LayerNorms, position embeddings and the cls token.

  python -m experiments.train_digits --out=weights/vit_digits --overwrite

prints per-epoch loss / train accuracy / held-out accuracy and saves the checkpoint with
`vitprune.checkpoint.save_weights` plus `metrics.json` (held-out accuracy, command, seed, time,
platform) inside the weights directory.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import flags

from experiments import common
import jax
import optax

from vitprune import atomic
from vitprune import checkpoint
from vitprune import console
from vitprune import digits
from vitprune import orbax_io
from vitprune.registry import get_config
from vitprune.train import TrainConfig, accuracy, check_train_config, load_split, train

vit_digits = get_config("vit_digits")


# ----------------------------------------------------------------------------- CLI


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags (only when run as a script, so importing is side-effect free)."""
  flags.DEFINE_string("out", "weights/vit_digits", "Output weights directory.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.", flag_values=fv)
  flags.DEFINE_integer("epochs", TrainConfig.epochs, "Training epochs.", flag_values=fv)
  flags.DEFINE_integer("batch_size", TrainConfig.batch_size, "Batch size.", flag_values=fv)
  flags.DEFINE_float("lr", TrainConfig.lr, "Peak learning rate.", flag_values=fv)
  flags.DEFINE_integer("warmup_epochs", TrainConfig.warmup_epochs, "Linear warm-up epochs.",
                       flag_values=fv)
  flags.DEFINE_float("weight_decay", TrainConfig.weight_decay, "AdamW weight decay.",
                     flag_values=fv)
  flags.DEFINE_float("label_smoothing", TrainConfig.label_smoothing, "Label smoothing.",
                     flag_values=fv)
  flags.DEFINE_integer("max_shift", TrainConfig.max_shift, "Random shift augmentation (pixels).",
                       flag_values=fv)
  flags.DEFINE_integer("seed", TrainConfig.seed, "Init / shuffle / augmentation seed.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_integer("split_seed", TrainConfig.split_seed,
                       "Seed of the digits train/test split.", lower_bound=0,
                       upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_integer("max_steps", None, "Stop after this many optimizer steps (smoke runs; "
                       "the learning-rate schedule still spans --epochs).", lower_bound=1,
                       flag_values=fv)


def main(f: flags.FlagValues):
  """Checks every flag and --out, then trains, saves and prints the held-out accuracy."""
  if not f.out:
    raise ValueError("--out is empty")
  out = os.path.abspath(f.out)
  common.check_new_dir(out, "out", overwrite=f.overwrite, is_ours=checkpoint.is_weights_dir)
  began = atomic.output_stamp(out)     # (not one made since: replaced, or this one kept)
  orbax_io.writable_path(out)       # the weights checkpoint goes below it: before training
  if f.epochs < 1:                  # (--epochs=0 was told its default warm-up exceeded it)
    raise ValueError(f"--epochs={f.epochs}: train for at least 1 epoch")
  if f.warmup_epochs > f.epochs:      # (TrainConfig's words named no flag, nor the default)
    given = "" if f["warmup_epochs"].present else " (its default)"
    raise ValueError(f"--warmup_epochs={f.warmup_epochs}{given} exceeds --epochs={f.epochs}: "
                     f"give --warmup_epochs <= --epochs")
  cfg = vit_digits
  with common.named_by_flag("epochs", "batch_size", "lr", "warmup_epochs", "weight_decay",
                            "label_smoothing", "max_shift"):    # (TrainConfig's, the flags')
    tc = TrainConfig(epochs=f.epochs, batch_size=f.batch_size, lr=f.lr,
                     warmup_epochs=f.warmup_epochs, weight_decay=f.weight_decay,
                     label_smoothing=f.label_smoothing, max_shift=f.max_shift,
                     seed=f.seed, split_seed=f.split_seed)
    check_train_config(cfg, tc)
  t_start = time.time()
  train_data = load_split("train", cfg, seed=tc.split_seed, test_fraction=tc.test_fraction)
  test_data = load_split("test", cfg, seed=tc.split_seed, test_fraction=tc.test_fraction)
  if tc.batch_size > len(train_data[0]):     # (train() says so too, after this run's output)
    raise ValueError(f"--batch_size={tc.batch_size} is larger than the {len(train_data[0])} "
                     "training digits")
  total = tc.epochs * (len(train_data[0]) // tc.batch_size)
  if f.max_steps is not None and f.max_steps >= total:   # (recorded as a stop that never came)
    per_epoch = len(train_data[0]) // tc.batch_size
    raise ValueError(f"--max_steps={f.max_steps} changes nothing: the run has {total} steps "
                     f"({console.counted(tc.epochs, 'epoch')} of {per_epoch}); leave it out or "
                     "give fewer")
  print(f"{cfg.name}: {cfg.num_tokens} tokens, depth {cfg.depth}; train {len(train_data[0])} / "
        f"test {len(test_data[0])} digits; "
        f"{console.counted(jax.device_count(), jax.default_backend() + ' device')}")
  params, history = train(cfg, tc, train_data, test_data, max_steps=f.max_steps)
  train_seconds = time.time() - t_start
  test_acc = history[-1]["test_accuracy"]   # the final params are the last epoch's
  train_acc = accuracy(params, cfg, *train_data)
  command = common.command_line("experiments.train_digits", f)
  meta = {"dataset": "sklearn_digits", "split": {"seed": tc.split_seed,
                                                 "test_fraction": tc.test_fraction,
                                                 "num_train": len(train_data[0]),
                                                 "num_test": len(test_data[0])},
          "epochs": tc.epochs, "max_steps": f.max_steps, "test_accuracy": test_acc,
          "train_accuracy": train_acc,
          "train_config": dataclasses.asdict(tc), "trained_by": "experiments/train_digits.py"}
  metrics = {
      "model": cfg.name, "test_accuracy": test_acc, "train_accuracy": train_acc,
      "num_test": len(test_data[0]), "num_train": len(train_data[0]),
      "command": command, "seed": tc.seed, "split_seed": tc.split_seed,
      "train_config": dataclasses.asdict(tc), "max_steps": f.max_steps,
      "train_seconds": round(train_seconds, 1),
      "history": history,
      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "platform": {"python": platform.python_version(), "machine": platform.machine(),
                   "system": platform.system(), "processor": platform.processor(),
                   "cpu_count": os.cpu_count(), "jax": jax.__version__,
                   "optax": optax.__version__, "backend": jax.default_backend(),
                   "devices": [str(d) for d in jax.devices()]},
  }
  path = checkpoint.save_weights(out, cfg, params, meta=meta, overwrite=f.overwrite,
                                 class_names=digits.DIGITS_CLASSES,
                                 extra_json={"metrics.json": metrics}, replaces=began)
  # (a --max_steps=5 run said nothing of its stop, and '(train 0.1015)' after the epoch line's
  # 'train acc 0.1156' read as a contradiction: that one is over the augmented training batches)
  if f.max_steps is not None:
    print(f"stopped after {console.counted(history[-1]['steps'], 'step')} of {total} "
          "(--max_steps)")
  print(f"held-out accuracy {test_acc:.4f}; on the training digits (unaugmented) "
        f"{train_acc:.4f}; {train_seconds:.0f}s; saved to {common.shown(path)}")


if __name__ == "__main__":
  common.run(main, define_flags)
