"""vitprune: latency-aware, training-free token pruning of Vision Transformers in JAX.

Submodules are imported lazily, so that `vitprune.load` (deployment) never pulls in the model
code: a deployed artifact runs from its exported StableHLO and orbax weights alone.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "ViTConfig": "vitprune.config", "Preprocessing": "vitprune.config",
    "get_config": "vitprune.registry", "list_models": "vitprune.registry",
    "Schedule": "vitprune.schedule",
    "forward": "vitprune.model", "jitted_forward": "vitprune.model",
    "init_params": "vitprune.model",
    "save_weights": "vitprune.checkpoint", "load_weights": "vitprune.checkpoint",
    "load": "vitprune.deploy",
}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'vitprune' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
