"""Name -> reducer factory for CLIs and configs: `make_reducer('pomt')`, `make_reducer('random',
seed=3)`, `make_reducer('evit', normalize=True)`."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple, Type

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
  return METHODS[key](**kwargs)    # (numpy option values: made Python's by the reducer)


def reducer_fields(reducer) -> Dict[str, Any]:
  """{option: value} of every option `reducer` was built with, defaults included: a record that
  says them all means the same reducer whatever a later version defaults to (random drop's
  `nested` default changed once)."""
  return {f.name: getattr(reducer, f.name) for f in dataclasses.fields(reducer)}


def check_named(reducer, name: str, options, ran: str, record: str):
  """`make_reducer(name, **options)`, which must equal `reducer` (what ran): else ValueError
  '`ran` R, not method M with options O (why): `record` would name another reducer than the
  one that ran'."""
  opts = dict(options or {})
  try:
    named, why = make_reducer(name, **opts), None
  except ValueError as e:        # (an unknown name or option: the record's, said as such)
    named, why = None, str(e)
  if reducer != named:
    raise ValueError(f"{ran} {reducer!r}, not method {name!r} with options {opts} "
                     f"({why or repr(named)}): {record} would name another reducer than the "
                     "one that ran")
  return named


def is_method(reducer_or_name: Any) -> bool:
  """Whether a reducer is one of `METHODS`' classes, or a name one of their names (a reducer of
  the user's own, or its name, is not: `make_reducer` cannot rebuild it)."""
  if isinstance(reducer_or_name, str):
    return reducer_or_name.strip().lower() in METHODS
  return type(reducer_or_name) in METHODS.values()


def manifest_name(reducer, name: Optional[str], options
                  ) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
  """(the method name, the options) a record gives `reducer`: `name`, as `make_reducer` spells
  it when it is one of `METHODS` (None: the reducer's own), and `options`, or where None and
  the reducer is one of `METHODS` its fields (a RandomDrop(seed=3) recorded with options {}
  read as seed 0), checked to make `reducer` whenever the reducer or the name is one of
  `METHODS`: ValueError naming both otherwise (a manifest named 'tome' over a POMT graph). A
  subclass of a method's reducer needs a name of its own (it inherits the method's)."""
  if reducer is None:
    return name, options
  family = [c for c in METHODS.values() if isinstance(reducer, c)]
  if family and not is_method(reducer) and (name is None or is_method(name)):
    raise ValueError(f"reducer {reducer!r} subclasses {family[0].__name__}: give it a method "
                     f"name of its own (reducer_name), not {name or reducer.name!r}")
  if not (is_method(reducer) or is_method(name or "")):
    return name, options               # (a reducer of the user's own, named as the user says)
  key = str(name or reducer.name).strip().lower()
  if options is None and is_method(reducer):
    options = reducer_fields(reducer)
  check_named(reducer, key, options, "the graph runs",
              "the manifest" + ("" if name is None else f" (reducer_name {name!r})"))
  return (None if name is None else key), options
