"""Name -> reducer factory for CLIs and configs: `make_reducer('pomt')`, `make_reducer('random',
seed=3)`, `make_reducer('evit', normalize=True)`."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Dict, Type

import numpy as np

from vitprune.config import METHOD_NAMES
from vitprune.reduce.evit import EViT
from vitprune.reduce.pomt import POMT
from vitprune.reduce.random_drop import RandomDrop
from vitprune.reduce.tome import ToMe
from vitprune.reduce.topk import TopK

METHODS: Dict[str, Type] = {"pomt": POMT, "topk": TopK, "tome": ToMe, "evit": EViT,
                            "random": RandomDrop}
if tuple(sorted(METHODS)) != METHOD_NAMES:
  raise ImportError(f"config.METHOD_NAMES {METHOD_NAMES} must list the reducers "
                    f"{tuple(sorted(METHODS))}")


def list_methods() -> list:
  return sorted(METHODS)


_OPTION_TYPES = {"bool": (bool, np.bool_), "int": numbers.Integral, "float": numbers.Real,
                 "str": str}


def _is_kind(value, kind: str) -> bool:
  """Whether `value` fits the option annotation `kind` (numpy scalars count; a bool is not a
  number here; an annotation not listed in _OPTION_TYPES is not checked)."""
  want = _OPTION_TYPES.get(kind)
  if want is None:
    return True
  if isinstance(value, (bool, np.bool_)) and kind != "bool":
    return False
  return isinstance(value, want)


def make_reducer(name: str, **kwargs):
  """The reducer registered as `name` (case-insensitive), built with `kwargs` (its fields).

  Raises ValueError listing the valid names, or naming the fields the method accepts.
  """
  key = str(name).strip().lower()
  if key not in METHODS:
    raise ValueError(f"unknown token-reduction method {name!r}; valid: "
                     f"{', '.join(list_methods())}")
  cls = METHODS[key]
  for f in dataclasses.fields(cls):        # "False" from a command line is not False
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if f.name in kwargs and not _is_kind(kwargs[f.name], kind):
      raise ValueError(f"method {key!r} option {f.name} must be {kind}, got "
                       f"{kwargs[f.name]!r}")
  try:
    return cls(**kwargs)
  except TypeError as e:
    fields = [f.name for f in dataclasses.fields(cls)]
    raise ValueError(f"method {key!r} accepts {fields or 'no options'}, got "
                     f"{sorted(kwargs)}: {e}") from None
