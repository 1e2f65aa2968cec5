"""Helpers shared by the experiments CLIs."""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from absl import flags
from absl import logging

# The embedded default: a registered model whose trained weights ship in the repository.
EMBEDDED_MODEL = "vit_digits"
EMBEDDED_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "weights", "vit_digits")


def quiet_logging() -> None:
  """Shows warnings and errors only (orbax logs every checkpoint step at INFO), unless the user
  passed --verbosity."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def class_names(weights_source: str) -> Optional[Tuple[str, ...]]:
  """The class names recorded with the weights `load_model` loaded (None for random weights
  or weights that record none): image-folder labels are matched to them by name."""
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.read_class_names(weights_source) if os.path.isdir(weights_source) else None


def load_model(model: Optional[str], weights: Optional[str], seed: int = 0
               ) -> Tuple[Any, Any, str]:
  """The `--model` / `--weights` rule every CLI follows -> (cfg, params, source description).

  `--weights=DIR`: the config and parameters stored there (`--model`, if also given, must name
  the same model). Otherwise `--model` (default: the embedded `vit_digits`): the embedded trained
  weights for `vit_digits`, random `init_params(cfg, seed)` for any other registered name.
  Raises FileNotFoundError / ValueError / KeyError naming the problem.
  """
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  model = model or EMBEDDED_MODEL
  if not weights and model == EMBEDDED_MODEL:
    weights = EMBEDDED_WEIGHTS
  if weights:
    if not os.path.isdir(weights):
      raise FileNotFoundError(f"--weights={weights!r} is not a directory")
    cfg, params = checkpoint.load_weights(weights)
    if model != EMBEDDED_MODEL and model != cfg.name:
      raise ValueError(f"--model={model!r} but {weights} holds {cfg.name!r}")
    return cfg, params, os.path.abspath(weights)
  cfg = get_config(model)
  return cfg, model_lib.init_params(cfg, seed), f"init_params(seed={seed})"
