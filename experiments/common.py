"""Helpers shared by the experiments CLIs."""
from absl import flags
from absl import logging


def quiet_logging() -> None:
  """Shows warnings and errors only (orbax logs every checkpoint step at INFO), unless the user
  passed --verbosity."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
