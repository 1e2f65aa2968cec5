r"""Write the bundled digits as an ImageFolder of 8x8 grayscale PNGs (`DIR/<class>/<idx>.png`).

  python -m experiments.digits_images --out=/tmp/digits_imgs            # the 359 test digits
  python -m experiments.digits_images --out=DIR --limit=100 --seed=1 --overwrite

For the CLIs that read image folders (`run_deployed`, `vitprune.edge run`, `estimate --data=DIR`):
the same images, split and class-balanced subset as `--data=digits` (with the default
`--split_seed=0`; another: the split of weights trained with `train_digits --split_seed`); the
CLIs refuse a folder holding training images of the weights they score. The folder is written
next to `--out` and renamed into place; an existing non-empty `--out` is refused unless it is a
digits folder written here and `--overwrite` is given.
"""
from __future__ import annotations

from absl import flags

from experiments import common
from vitprune import console
from vitprune import digits


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags on `fv`."""
  flags.DEFINE_string("out", None, "Folder to create.", flag_values=fv)
  flags.DEFINE_enum("split", "test", digits.SPLITS, "Which digits (the split of "
                    "--data=digits).", flag_values=fv)
  flags.DEFINE_integer("limit", None, "Only a class-balanced subset of this many images.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the class-balanced subset (--limit), as estimate "
                       "--seed draws it.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_integer("split_seed", 0, "Seed of the train/test split (train_digits "
                       "--split_seed); 0: the split of --data=digits and the bundled model.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace a folder this CLI wrote before.", flag_values=fv)


def main(f: flags.FlagValues) -> str:
  """Checks --out and --limit, writes the folder, prints what it wrote -> its path."""
  if f["seed"].present and f.limit is None:       # (recorded in the folder's marker: untrue)
    raise ValueError(f"--seed={f.seed} applies with --limit only (it draws that subset); "
                     "without --limit every image of the split is written")
  if f["split_seed"].present and f.split == "all":
    raise ValueError(f"--split_seed={f.split_seed} changes nothing with --split=all (every "
                     "digit, whatever the split); give --split=train or --split=test")
  common.check_new_dir(f.out, "out", f.overwrite, digits.is_digits_imagefolder)
  train, test = digits.digits_split(f.split_seed)
  size = {"train": len(train), "test": len(test), "all": len(train) + len(test)}[f.split]
  if f.limit is not None and f.limit > size:
    raise ValueError(f"--limit={f.limit} exceeds the {size} digits of the {f.split} split")
  if f["seed"].present and f.limit == size:      # (the same files; the marker said seed 7)
    raise ValueError(f"--seed={f.seed} draws the --limit subset, but --limit={f.limit} is every "
                     f"one of the {size} digits of the {f.split} split: it changes nothing")
  root = digits.write_digits_imagefolder(f.out, f.split, f.limit, seed=f.seed,
                                       overwrite=f.overwrite, split_seed=f.split_seed)
  written = size if f.limit is None else f.limit      # (--limit=1 read 'wrote 1 digits')
  print(f"wrote {console.counted(written, 'digit')} ({f.split} split"
        f"{f' of seed {f.split_seed}' if f.split_seed else ''}) to {common.shown(root)}")
  return root


if __name__ == "__main__":
  common.run(main, define_flags)
