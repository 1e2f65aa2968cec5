"""Shared test helpers.

The experiments CLIs define absl flags at module level, and several CLIs share flag names
(`--batch_size`, `--model`, ...). Test files therefore import a CLI through `load_cli`, which
first unregisters the flags of any other experiments module loaded in this process.
"""
import importlib
import sys

from absl import flags


def load_cli(name: str):
  """Imports `experiments.<name>` with only its own flags registered; returns the module."""
  full = f"experiments.{name}"
  for mod in [m for m in sys.modules if m.startswith("experiments.") and m != full]:
    for flag in flags.FLAGS.get_flags_for_module(mod):
      if flag.name in flags.FLAGS:
        delattr(flags.FLAGS, flag.name)
    del sys.modules[mod]
  return importlib.import_module(full)
