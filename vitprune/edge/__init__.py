"""Edge deployment without jax: run IREE-compiled artifacts and profile kits on a board.

    python -m vitprune.edge run --artifact=DIR --images=DIR [--target=iree:host]
    python -m vitprune.edge bench --artifact=DIR [--target=...]
    python -m vitprune.edge profile --kit=DIR --out=FILE.json

Needs only `iree-base-runtime`, numpy, pillow and absl-py (`requirements-edge.txt`) plus this
`vitprune` source tree: importing `vitprune.edge` imports neither jax, flax nor orbax (the
`vitprune` package imports its submodules lazily; `vitprune.data`, `vitprune.profile.records`
and `vitprune.atomic` are numpy/PIL only). The host side (compiling) is `vitprune.iree_build`.
"""
from vitprune import console

console.exit_on_early_interrupt("vitprune.edge")   # `python -m vitprune.edge`: before its imports

from vitprune.edge.targets import EdgeError, Target, parse_target, parse_targets  # noqa: E402
from vitprune.edge.runtime import EdgeModel, load
from vitprune.profile.protocol import TimingConfig

__all__ = ["EdgeError", "EdgeModel", "Target", "TimingConfig", "load", "parse_target",
           "parse_targets"]
