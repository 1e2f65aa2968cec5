"""How much memory a forward needs, and whether a batch fits: checked before any work.

`forward_bytes(cfg, batch, dtype, schedule)` is an upper-bound style estimate of the live memory
of one inference forward (no gradients): the parameters (stored float32, plus a cast copy for a
lower compute dtype), the float32 input images, and the largest block's activations: the
residual stream, q/k/v, the attention output, the MLP hidden layer and the attention logits and
probabilities `[B, heads, n, n]` (explicit in a block that reduces tokens with attention
statistics; also counted for the fused path, which may materialise them on CPU). An accuracy
evaluation of many schedules (`evaluation=True`) also holds the tokens after the embedding and
after every block of a prefix its schedules share. The estimate is affine in the batch size, so
the largest batch that fits follows directly.

`check_batch_fits` compares it with the memory the machine has available (`/proc/meminfo`
MemAvailable; no new dependency) and raises ValueError naming the batch, the estimate, what is
available and the largest batch that fits. Given `num_params` (a deployment manifest records
it), nothing here imports the model code (`vitprune.model`, jax), so `run_deployed` can check too.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from vitprune.config import ViTConfig
from vitprune.schedule import Schedule, as_positive_int, check_schedule

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
MEMINFO = "/proc/meminfo"


def param_count(cfg: ViTConfig) -> int:
  """Number of parameters of `cfg` (from `param_shapes`, no arrays built)."""
  from vitprune.model import param_shapes  # pylint: disable=g-import-not-at-top  (imports jax)

  def count(node) -> int:
    if isinstance(node, dict):
      return sum(count(v) for v in node.values())
    if isinstance(node, list):
      return sum(count(v) for v in node)
    return int(np.prod(node))
  return count(param_shapes(cfg))


def _dtype_bytes(dtype: str) -> int:
  if dtype not in DTYPE_BYTES:
    raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
  return DTYPE_BYTES[dtype]


def _fixed_bytes(cfg: ViTConfig, dtype: str, num_params: Optional[int] = None) -> int:
  """Batch-independent bytes: float32 parameters, plus their cast copy below float32."""
  n = param_count(cfg) if num_params is None else num_params
  d = _dtype_bytes(dtype)
  return 4 * n + (d * n if d != 4 else 0)


def _per_example_bytes(cfg: ViTConfig, dtype: str, schedule: Optional[Schedule],
                       evaluation: bool = False) -> int:
  """Bytes per image: the float32 input plus the largest block's live activations; with
  `evaluation`, also the tokens held after the embedding and after every block while schedules
  that share a prefix are evaluated (`PiecewiseForward.run_many`)."""
  d = _dtype_bytes(dtype)
  counts = check_schedule(cfg, schedule).counts    # another model's schedule is refused
  image = 4 * cfg.img_size * cfg.img_size * cfg.in_chans
  dim, heads = cfg.embed_dim, cfg.num_heads
  worst = 0
  for n in counts[:-1] or counts:
    # residual in + q, k, v + attention output + residual out + MLP hidden (pre/post activation)
    tokens = n * (6 * dim + 2 * cfg.mlp_hidden)
    attn = 2 * heads * n * n          # logits and probabilities
    worst = max(worst, d * (tokens + attn))
  held = d * (cfg.depth + 1) * counts[0] * dim if evaluation else 0
  return image + worst + held


def forward_bytes(cfg: ViTConfig, batch: int, dtype: str = "float32",
                  schedule: Optional[Schedule] = None, num_params: Optional[int] = None, *,
                  evaluation: bool = False, held_per_example: int = 0) -> int:
  """Estimated peak bytes of one forward of `cfg` at `batch` images (see the module doc); with
  `evaluation`, of an evaluation of many schedules (`_per_example_bytes`); `held_per_example`:
  bytes per image the caller holds besides (the profiler's block inputs)."""
  batch = as_positive_int(batch, "batch size")
  return (_fixed_bytes(cfg, dtype, num_params)
          + batch * (_per_example_bytes(cfg, dtype, schedule, evaluation) + held_per_example))


def max_batch(cfg: ViTConfig, available: int, dtype: str = "float32",
              schedule: Optional[Schedule] = None, num_params: Optional[int] = None, *,
              evaluation: bool = False, held_per_example: int = 0) -> int:
  """The largest batch whose `forward_bytes` is within `available` bytes (0: none fits)."""
  room = available - _fixed_bytes(cfg, dtype, num_params)
  return max(0, room // (_per_example_bytes(cfg, dtype, schedule, evaluation) +
                         held_per_example))


def available_bytes(meminfo: str = MEMINFO) -> Optional[int]:
  """MemAvailable of `meminfo` in bytes (None where the file or the field is missing, or is not
  the kernel's `<int> kB`)."""
  try:
    with open(meminfo) as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          parts = line.split()
          return int(parts[1]) * 1024 if parts[2:] == ["kB"] else None
  except (OSError, ValueError, IndexError):
    return None
  return None


def _gib(n: float) -> str:
  return f"{n / 2 ** 30:.3g} GiB"


def check_batch_fits(cfg: ViTConfig, batches: Sequence[int], dtype: str = "float32", *,
                     schedule: Optional[Schedule] = None, flag: str = "--batch_size",
                     available: Optional[int] = None,
                     num_params: Optional[int] = None, what: Optional[str] = None,
                     evaluation: bool = False, held_per_example: int = 0) -> None:
  """Raises ValueError when the largest of `batches` cannot fit in `available` bytes (default:
  `available_bytes()`; no check where that is unknown), naming what fits. The error starts with
  `what` (default: `flag`=the batch). `held_per_example`: bytes per image held besides the
  forward (`ProfileSpec.held_input_bytes`). `evaluation`: the batch evaluates many schedules
  (accuracy), holding the tokens of a shared prefix (`forward_bytes`)."""
  if isinstance(batches, (str, bytes)) or len(batches) == 0:     # (an array: `not` is ambiguous)
    raise ValueError(f"{flag}: no batch size given")
  batch = max(as_positive_int(b, flag) for b in batches)     # ([0, 4] passed: only 4 was checked)
  if available is None:
    available = available_bytes()
    if available is None:
      return
  need = forward_bytes(cfg, batch, dtype, schedule, num_params, evaluation=evaluation,
                       held_per_example=held_per_example)
  if need <= available:
    return
  fits = max_batch(cfg, available, dtype, schedule, num_params, evaluation=evaluation,
                   held_per_example=held_per_example)
  hint = (f"at most {fits} fit" if fits else "not even batch 1 fits")
  kind = "evaluation" if evaluation else "forward"
  raise ValueError(f"{what or f'{flag}={batch}'} cannot fit in memory: a {dtype} {kind} of "
                   f"{cfg.name} needs ~{_gib(need)} but {_gib(available)} is available ({hint}; "
                   f"see {MEMINFO} MemAvailable)")


def check_conversion_fits(cfg: ViTConfig, *, what: str, available: Optional[int] = None) -> None:
  """Raises ValueError when converting a checkpoint to `cfg` cannot fit in `available` bytes
  (default: `available_bytes()`; no check where that is unknown): its float32 parameters plus
  the position-embedding resampling to `cfg`'s grid ([grid, grid, embed_dim]: the float64
  resize, its float32 cast and the jax copy, 16 bytes per element; the checkpoint read itself
  is not counted). A huge --img_size failed after reading the checkpoint, with numpy's bare
  message."""
  if available is None:
    available = available_bytes()
    if available is None:
      return
  need = 4 * param_count(cfg) + (8 + 4 + 4) * cfg.grid_size ** 2 * cfg.embed_dim
  if need > available:
    raise ValueError(f"{what} cannot fit in memory: converting {cfg.name} at img_size "
                     f"{cfg.img_size} ({cfg.grid_size}x{cfg.grid_size} patches) needs "
                     f"~{_gib(need)} (float32 parameters and the position-embedding "
                     f"resampling) but {_gib(available)} is available (see {MEMINFO} "
                     "MemAvailable)")
