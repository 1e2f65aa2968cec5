"""What jax is lowering a graph for: set by `iree_build.iree_lowering` while it exports a forward
for IREE. The few places that write a graph differently for IREE's compiler (the same numbers in
another form) ask `for_iree()` at trace time; every other graph is traced as for XLA."""
from __future__ import annotations

import contextvars

IREE = contextvars.ContextVar("vitprune_iree_lowering", default=False)


def for_iree() -> bool:
  """True while tracing inside `iree_build.iree_lowering()`."""
  return IREE.get()
