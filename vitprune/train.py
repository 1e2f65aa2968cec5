"""Training a ViT classifier with the very `vitprune.model.forward` the library prunes.

Pure pieces with static configuration: `TrainConfig` (hyper-parameters), `load_split` (a digits
split through the eval preprocessing), `random_shift` augmentation, `learning_rate` (warm-up +
cosine), `make_optimizer` (AdamW on it after global-norm clipping; no decay on biases, norms,
position embeddings and prefix tokens), `make_train_step` (one jitted step), `accuracy`, and
`train` (the loop, returning params and a per-epoch history). `experiments.train_digits` is the
CLI.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vitprune import data
from vitprune import digits
from vitprune import model
from vitprune.config import ViTConfig

Params = model.Params


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyper-parameters of one training run (static; recorded in the checkpoint meta)."""
  epochs: int = 40
  batch_size: int = 64
  lr: float = 2e-3
  min_lr_ratio: float = 0.01
  warmup_epochs: int = 3
  weight_decay: float = 0.05
  label_smoothing: float = 0.1
  max_shift: int = 4
  clip_norm: float = 1.0
  seed: int = 0
  split_seed: int = 0
  test_fraction: float = 0.2

  def __post_init__(self):
    for name in ("epochs", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
      raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], "
                       f"got {self.warmup_epochs}")
    for name in ("lr", "label_smoothing", "weight_decay", "min_lr_ratio", "clip_norm",
                 "test_fraction", "warmup_epochs", "max_shift"):
      if not math.isfinite(getattr(self, name)):
        raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
    with np.errstate(over="ignore"):          # training computes in float32
      big = [n for n in ("lr", "weight_decay", "clip_norm")
             if not np.isfinite(np.float32(getattr(self, n)))]
    if big:
      raise ValueError(f"{big[0]} {getattr(self, big[0])} overflows float32, the dtype "
                       "training computes in")
    if not self.lr > 0:
      raise ValueError(f"lr must be > 0, got {self.lr}")
    if not np.float32(self.lr) >= np.finfo(np.float32).tiny:   # (1e-46, 0 in float32, and
      # 1e-40, subnormal and flushed to 0 by XLA, trained nothing and saved the weights)
      raise ValueError(f"lr {self.lr} is below float32's smallest normal number "
                       f"({np.finfo(np.float32).tiny:.3g}): training, in float32, would not move")
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
    if self.max_shift < 0:
      raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
    if self.weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
    if self.min_lr_ratio < 0:   # (the cosine ended at a negative rate: the loss ascended)
      raise ValueError(f"min_lr_ratio must be >= 0, got {self.min_lr_ratio}")
    if not self.clip_norm > 0:   # (every update clipped to nothing, or flipped)
      raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")


class TrainState(NamedTuple):
  params: Params
  opt_state: Any


# ----------------------------------------------------------------------------- data


def load_split(split: str, cfg: ViTConfig, *, seed: int = 0, test_fraction: float = 0.2
               ) -> Tuple[np.ndarray, np.ndarray]:
  """A digits split through the model's eval preprocessing.

  Returns:
    `(images float32 [N, S, S, 3], labels int32 [N])` in split order.
  """
  imgs, labels = [], []
  for x, y, idx in digits.digits_batches(split, 256, prep=cfg.preprocessing, seed=seed,
                                       test_fraction=test_fraction):
    valid = data.batch_valid_mask(idx)
    imgs.append(x[valid])
    labels.append(y[valid])
  return np.concatenate(imgs), np.concatenate(labels).astype(np.int32)


def background_value(cfg: ViTConfig) -> np.ndarray:
  """float32 `[C]`: what a black (0) pixel becomes after normalisation, the shift fill value."""
  prep = cfg.preprocessing
  return (-np.asarray(prep.mean, np.float32) / np.asarray(prep.std, np.float32)).astype(
      np.float32)


def random_shift(key: jax.Array, images: jax.Array, max_shift: int, fill: jax.Array
                 ) -> jax.Array:
  """Shifts each image of `[B, H, W, C]` by its own random (dy, dx) in [-max_shift, max_shift].

  Pixels shifted in take the value `fill` `[C]`.
  """
  if max_shift == 0:
    return images
  b, h, w, c = images.shape
  padded = jnp.broadcast_to(fill.astype(images.dtype),
                            (b, h + 2 * max_shift, w + 2 * max_shift, c))
  padded = padded.at[:, max_shift:max_shift + h, max_shift:max_shift + w].set(images)
  offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)


# ----------------------------------------------------------------------------- optimisation


def decay_mask(params: Params) -> Params:
  """True for the leaves AdamW decays: 2-D+ weight matrices, not biases/norms/embeddings."""
  def keep(path, leaf):
    names = [str(getattr(p, "key", "")) for p in path]
    if names[-1] in ("bias", "scale", "gamma") or names[0] in ("pos_embed", "cls_token",
                                                               "dist_token", "reg_token"):
      return False
    return leaf.ndim >= 2
  return jax.tree_util.tree_map_with_path(keep, params)


def learning_rate(tc: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
  """step -> learning rate: linear from 0 to `tc.lr` over the warm-up epochs, then a cosine
  down to `tc.lr * tc.min_lr_ratio` at the last step (optax counts the warm-up in its decay
  steps)."""
  total = tc.epochs * steps_per_epoch
  warmup = tc.warmup_epochs * steps_per_epoch
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=tc.lr, warmup_steps=warmup, decay_steps=max(total, warmup + 1),
      end_value=tc.lr * tc.min_lr_ratio)


def make_optimizer(tc: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
  """AdamW (`decay_mask`) on the `learning_rate` schedule, after global-norm clipping."""
  return optax.chain(optax.clip_by_global_norm(tc.clip_norm),
                     optax.adamw(learning_rate(tc, steps_per_epoch),
                                 weight_decay=tc.weight_decay, mask=decay_mask))


def loss_and_accuracy(params: Params, images: jax.Array, labels: jax.Array, *,
                      cfg: ViTConfig, label_smoothing: float) -> Tuple[jax.Array, jax.Array]:
  """Mean (label-smoothed) cross-entropy and top-1 accuracy of `[B, H, W, C]` / `[B]`."""
  logits = model.forward(params, images, cfg=cfg, precision="default")
  targets = optax.smooth_labels(jax.nn.one_hot(labels, cfg.num_classes), label_smoothing)
  loss = optax.softmax_cross_entropy(logits, targets).mean()
  acc = (jnp.argmax(logits, -1) == labels).mean()
  return loss, acc


def make_train_step(cfg: ViTConfig, tc: TrainConfig, optimizer: optax.GradientTransformation
                    ) -> Callable[..., Tuple[TrainState, jax.Array, jax.Array]]:
  """A jitted `(state, images [B,H,W,C], labels [B], key) -> (state, loss, accuracy)`."""
  fill = jnp.asarray(background_value(cfg))

  def step(state: TrainState, images, labels, key):
    images = random_shift(key, images, tc.max_shift, fill)
    grad_fn = jax.value_and_grad(loss_and_accuracy, has_aux=True)
    (loss, acc), grads = grad_fn(state.params, images, labels, cfg=cfg,
                                 label_smoothing=tc.label_smoothing)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(params, opt_state), loss, acc

  return jax.jit(step, donate_argnums=0)


def init_state(cfg: ViTConfig, tc: TrainConfig, optimizer: optax.GradientTransformation
               ) -> TrainState:
  params = model.init_params(cfg, tc.seed)
  return TrainState(params, optimizer.init(params))


def epoch_batches(num: int, batch_size: int, seed: int, epoch: int) -> List[np.ndarray]:
  """Shuffled full batches of indices into `[num]` for one epoch (remainder dropped)."""
  if num < batch_size:
    raise ValueError(f"training set of {num} images is smaller than batch_size {batch_size}")
  perm = np.random.default_rng([seed, epoch]).permutation(num)
  return [perm[i:i + batch_size] for i in range(0, num - batch_size + 1, batch_size)]


def accuracy(params: Params, cfg: ViTConfig, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 256) -> float:
  """Top-1 accuracy over `[N, H, W, C]`, in fixed-shape padded batches. FloatingPointError
  when a logit is not finite (NaN's argmax is class 0: a broken model scored 0.10)."""
  correct = 0
  for s in range(0, len(images), batch_size):
    x, y = images[s:s + batch_size], labels[s:s + batch_size]
    n = len(x)
    if n < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
    logits = np.asarray(model.jitted_forward(params, jnp.asarray(x), cfg=cfg))[:n]
    if not np.isfinite(logits).all():
      raise FloatingPointError("the model gives non-finite logits")
    correct += int((logits.argmax(-1) == y).sum())
  return correct / len(images)


def check_train_config(cfg: ViTConfig, tc: TrainConfig) -> None:
  """Raises ValueError where `tc` cannot train `cfg` (what TrainConfig alone cannot know)."""
  if tc.max_shift >= cfg.img_size:   # every training image would leave the frame
    raise ValueError(f"max_shift {tc.max_shift} must be below the image size {cfg.img_size}")


def train(cfg: ViTConfig, tc: TrainConfig, train_data: Tuple[np.ndarray, np.ndarray],
          test_data: Optional[Tuple[np.ndarray, np.ndarray]] = None, *,
          max_steps: Optional[int] = None, log: Callable[[str], None] = print
          ) -> Tuple[Params, List[Dict[str, float]]]:
  """Trains `cfg` from `init_params(cfg, tc.seed)`; returns (params, per-epoch history).

  `max_steps` stops early (smoke tests); the schedule still spans `tc.epochs`.
  """
  check_train_config(cfg, tc)
  x_train, y_train = train_data
  steps_per_epoch = len(x_train) // tc.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"training set of {len(x_train)} images is smaller than batch_size "
                     f"{tc.batch_size}")
  optimizer = make_optimizer(tc, steps_per_epoch)
  state = init_state(cfg, tc, optimizer)
  step_fn = make_train_step(cfg, tc, optimizer)
  key = jax.random.key(tc.seed)
  history, step = [], 0
  for epoch in range(tc.epochs):
    t0 = time.time()
    losses, accs = [], []
    for idx in epoch_batches(len(x_train), tc.batch_size, tc.seed, epoch):
      if max_steps is not None and step >= max_steps:
        break
      state, loss, acc = step_fn(state, jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]),
                                 jax.random.fold_in(key, step))
      losses.append(loss)
      accs.append(acc)
      step += 1
    if not losses:
      break
    rec = {"epoch": epoch + 1, "steps": step, "loss": float(np.mean(jax.device_get(losses))),
           "train_accuracy": float(np.mean(jax.device_get(accs)))}
    if not math.isfinite(rec["loss"]):     # the rest of the run would train on NaNs
      raise FloatingPointError(f"training diverged: the mean loss of epoch {epoch + 1} is "
                               f"{rec['loss']} (after {step} steps); lower the learning rate "
                               f"(lr {tc.lr})")
    # Each loss is taken before its update: the last step can break the weights unseen. The
    # held-out images (else a training batch) must still get finite logits.
    check = test_data if test_data is not None else (x_train[:tc.batch_size],
                                                     y_train[:tc.batch_size])
    try:
      held_out = accuracy(state.params, cfg, *check)
    except FloatingPointError:
      raise FloatingPointError(f"training diverged: after epoch {epoch + 1} ({step} steps) the "
                               f"model gives non-finite logits; lower the learning rate (lr "
                               f"{tc.lr})") from None
    if test_data is not None:
      rec["test_accuracy"] = held_out
    rec["seconds"] = time.time() - t0
    history.append(rec)
    log(f"epoch {rec['epoch']:3d}  loss {rec['loss']:.4f}  train acc {rec['train_accuracy']:.4f}"
        + (f"  test acc {rec['test_accuracy']:.4f}" if "test_accuracy" in rec else "")
        + f"  ({rec['seconds']:.1f}s)")
  return state.params, history
