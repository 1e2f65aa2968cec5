"""Name -> reducer factory for CLIs and configs: `make_reducer('pomt')`, `make_reducer('random',
seed=3)`, `make_reducer('evit', normalize=True)`."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Type

from vitprune.config import METHOD_NAMES, METHOD_OPTIONS, method_options_problem
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
for _name, _cls in METHODS.items():
  _fields = {f.name: f.type if isinstance(f.type, str) else f.type.__name__
             for f in dataclasses.fields(_cls)}
  if _fields != METHOD_OPTIONS[_name]:
    raise ImportError(f"config.METHOD_OPTIONS[{_name!r}] {METHOD_OPTIONS[_name]} must be the "
                      f"reducer's fields {_fields}")


def list_methods() -> list:
  return sorted(METHODS)


def make_reducer(name: str, **kwargs):
  """The reducer registered as `name` (case-insensitive), built with `kwargs` (its fields).

  Raises ValueError listing the valid names, or naming the fields the method accepts.
  """
  key = str(name).strip().lower()
  if key not in METHODS:
    raise ValueError(f"unknown token-reduction method {name!r}; valid: "
                     f"{', '.join(list_methods())}")
  problem = method_options_problem(key, kwargs)
  if problem:
    raise ValueError(problem)
  return METHODS[key](**kwargs)


def reducer_fields(reducer) -> Dict[str, Any]:
  """{option: value} of every option `reducer` was built with, defaults included: a record that
  says them all means the same reducer whatever a later version defaults to (random drop's
  `nested` default changed once)."""
  return {f.name: getattr(reducer, f.name) for f in dataclasses.fields(reducer)}


def check_named(reducer, name: str, options, ran: str, record: str):
  """`make_reducer(name, **options)`, which must equal `reducer` (what ran): else ValueError
  '`ran` R, not method M with options O (the named reducer): `record` would name another
  reducer than the one that ran'."""
  named = make_reducer(name, **dict(options or {}))
  if reducer != named:
    raise ValueError(f"{ran} {reducer!r}, not method {name!r} with options "
                     f"{dict(options or {})} ({named!r}): {record} would name another reducer "
                     "than the one that ran")
  return named


def is_method(reducer_or_name: Any) -> bool:
  """Whether a reducer is one of `METHODS`' classes, or a name one of their names (a reducer of
  the user's own, or its name, is not: `make_reducer` cannot rebuild it)."""
  if isinstance(reducer_or_name, str):
    return reducer_or_name.strip().lower() in METHODS
  return type(reducer_or_name) in METHODS.values()
