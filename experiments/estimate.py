r"""Estimates accuracy / fidelity of a ViT under token reduction and writes an estimate file.

  # The paper's A(n): random tokens dropped after the embedding, digits test split.
  python -m experiments.estimate --weights=weights/vit_digits --data=digits --method=random

  # POMT at block 3 over a token grid; per-layer sensitivity of Top-K on an image folder.
  python -m experiments.estimate --weights=weights/vit_digits --method=pomt --layer=3 \
      --tokens=17:65:4
  python -m experiments.estimate --model=deit_tiny_patch16_224 --weights=weights/deit_tiny \
      --data=/data/imagenet/val --num_images=1000 --method=topk --layers=all --tokens=100:197:16

  # Random drop as it was before 2026-12-05: each block draws its own subset.
  python -m experiments.estimate --method=random --method_opts=nested=false

`--model` alone evaluates `init_params(model, --init_seed)` (for plumbing checks only); with
`--weights` the config comes from the weights directory (and `--model`, if given, must match).
`--tokens`: comma list ("33,49,65"), inclusive range "start:stop:step", or "all"; default 16
counts evenly spaced over [prefix + 1, N]. `--layer`: "embed" (drop after the embedding, the
default for `random`) or a block index (default 3 for the other methods). `--layers`: a comma list
or "all" -> per-layer sensitivity table S[l, n] instead of one curve.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

from absl import flags
import numpy as np

from experiments import common
from vitprune import atomic
from vitprune import checkpoint
from vitprune import console
from vitprune import digits
from vitprune import estimate
from vitprune import jsonio
from vitprune import memory
from vitprune.config import COMPUTE_DTYPES, method_label, method_options_problem
from vitprune.data import UNLABELLED_NOTE, check_not_read_as_an_image
from vitprune.digest import params_sha256
from vitprune.records.estimate import (FORMAT as ESTIMATE_FORMAT, read_estimate, table_text,
                                       write_estimate)
from vitprune.reduce.methods import make_reducer, reducer_fields
from vitprune.schedule import check_schedule, parse_token_grid


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Registers this CLI's flags (only when run as a script, so importing is side-effect free)."""
  flags.DEFINE_string("model", None, "Registered model name: random init unless --weights; "
                      "default vit_digits with its embedded trained weights.", flag_values=fv)
  flags.DEFINE_string("weights", None, "Weights directory (vitprune.checkpoint.save_weights).",
                      flag_values=fv)
  flags.DEFINE_integer("init_seed", 0, "Seed of init_params when only --model is given.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_string("data", "digits", "'digits' or an image folder (labelled or flat).",
                      flag_values=fv)
  flags.DEFINE_enum("split", "test", digits.SPLITS, "The digits split.", flag_values=fv)
  flags.DEFINE_string("method", "random", "random | pomt | topk | tome | evit.", flag_values=fv)
  flags.DEFINE_list("method_opts", [], "The reducer's options, key=value (e.g. nested=false for "
                    "random: each block draws its own subset, random drop before 2026-12-05; "
                    "normalize=true for evit); random drop's seed is --seed.", flag_values=fv)
  flags.DEFINE_string("tokens", None, "Token grid: 'a,b,c', 'start:stop:step' or 'all' "
                      "(default: 16 evenly spaced counts).", flag_values=fv)
  flags.DEFINE_string("layer", None,
                      "'embed' or a block index (default: embed for random, else 3).",
                      flag_values=fv)
  flags.DEFINE_string("layers", None, "Per-layer sensitivity: comma list of layers, or 'all' "
                      "(default: one layer, --layer).", flag_values=fv)
  flags.DEFINE_integer("num_images", None, "Seeded class-balanced subset size (default: all).",
                       flag_values=fv)
  flags.DEFINE_integer("holdout_images", None, "Hold this many images (seeded by --seed, "
                       "class-balanced) out: the estimate measures the others (a later choice "
                       "can be checked on the held-out ones; the main job's --holdout_images).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Fixed batch size (last batch padded).", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the subset and of the random reducer.",
                       lower_bound=0, upper_bound=common.MAX_SEED, flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", list(COMPUTE_DTYPES), "Compute dtype.", flag_values=fv)
  flags.DEFINE_integer("num_workers", 4, "Image decoding threads.", flag_values=fv)
  flags.DEFINE_bool("shard", True, "Shard batches over all local devices.", flag_values=fv)
  flags.DEFINE_string("out_dir", "outputs/estimate", "Where the estimate JSON is written.",
                      flag_values=fv)
  flags.DEFINE_string("out_name", None, "File name (default: one made of the model, method, "
                      "layers, data, images, seed, --tokens and --dtype).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing estimate file.", flag_values=fv)


def parse_tokens(cfg, text: Optional[str]) -> List[int]:
  """Token grid, ascending: `vitprune.schedule.parse_token_grid` syntax (as every CLI's
  --tokens), or None/empty -> 16 evenly spaced counts over [prefix + 1, num_tokens]."""
  if text is None or text.strip() == "":
    lo, hi = cfg.num_prefix_tokens + 1, cfg.num_tokens
    return sorted({int(round(v)) for v in np.linspace(lo, hi, 16)})
  return sorted(parse_token_grid(cfg, text))


def parse_layer(text: str, depth: int, flag: str = "layer") -> Optional[int]:
  """'embed' -> None, a block index -> itself; ValueError naming `--flag` otherwise."""
  if text == "embed":
    return None
  try:
    layer = int(text)
  except ValueError:
    raise ValueError(f"--{flag}: layer {text!r} is neither 'embed' nor a block index") from None
  if not 0 <= layer < depth:
    raise ValueError(f"--{flag}: layer {layer} outside [0, {depth - 1}] (model depth {depth})")
  return layer


def parse_layers(text: str, depth: int) -> List[Optional[int]]:
  """--layers: 'all' (every block) or a comma list of `parse_layer`'s (once each:
  `estimate.sensitivity_points` refuses duplicates)."""
  if text.strip() == "all":
    return list(range(depth))
  return [parse_layer(t.strip(), depth, "layers") for t in text.split(",")]


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def grid_tag(tokens: Sequence[int]) -> str:
  """File-name tag of an ascending token grid: 't5-65by4' (evenly spaced), 't9.17.33' (up to 6
  counts), else 't5-65x7-<sha1 prefix>'; the same grid always gets the same tag."""
  steps = {b - a for a, b in zip(tokens, tokens[1:])}
  if len(tokens) > 2 and len(steps) == 1:
    return f"t{tokens[0]}-{tokens[-1]}by{steps.pop()}"
  if len(tokens) <= 6:
    return "t" + ".".join(str(t) for t in tokens)
  digest = hashlib.sha1(",".join(str(t) for t in tokens).encode()).hexdigest()[:8]
  return f"t{tokens[0]}-{tokens[-1]}x{len(tokens)}-{digest}"


def default_out_name(cfg, method: str, layers: Sequence[Optional[int]], data_tag: str,
                     num_examples: int, seed: int, tokens: Optional[Sequence[int]],
                     dtype: str, holdout_images: Optional[int] = None,
                     weights_tag: str = "", options: Optional[Dict[str, Any]] = None) -> str:
  """`<model>_<method>[_<options>]_<layers>_<data>_n<images>[_h<held out>]_s<seed>[_<grid>]_
  <dtype>[_w<weights>].json`: every flag that changes the numbers, so that two estimates never
  share a name (`options`: the reducer's options other than its defaults, as `key-value`, e.g.
  nested-false; `tokens` None: the default grid, no tag; the images left by a holdout are not a
  --num_images subset; `weights_tag`: the first sha256 digits of the parameters, for weights
  other than the embedded default's: --weights or --init_seed made another model's estimate
  clash with this one's name, and --overwrite replaced it)."""
  layer_tag = "-".join("embed" if l is None else f"L{l}" for l in layers)
  if len(layer_tag) > 40:
    layer_tag = f"{len(layers)}layers"
  grid = "" if tokens is None else "_" + grid_tag(tokens)
  held = "" if holdout_images is None else f"_h{holdout_images}"
  weights = f"_w{weights_tag}" if weights_tag else ""
  opts = "".join(f"_{k}-{json.dumps(v)}" for k, v in sorted((options or {}).items()))
  return _slug(f"{cfg.name}_{method}{opts}_{layer_tag}_{data_tag}_n{num_examples}{held}_s{seed}"
               f"{grid}_{dtype}{weights}") + ".json"


def weights_tag(params, class_names: Optional[Sequence[str]] = None) -> str:
  """'' for the embedded default weights (by their parameters' sha256, wherever they were
  given from: --weights=weights/vit_digits named them apart), else the first 8 hex digits of
  the parameters' sha256 (`default_out_name`'s weights tag); + 'c' and 6 hex digits of the
  class names when the weights record others than the embedded default's (the same
  parameters under other names label the images otherwise: that estimate took this one's
  name, and --overwrite replaced a labelled estimate by an agreement-only one)."""
  sha = params_sha256(params)
  tag = "" if sha == checkpoint.recorded_params_sha256(common.EMBEDDED_WEIGHTS) else sha[:8]
  if class_names is not None and tuple(class_names) != common.class_names(
      common.EMBEDDED_WEIGHTS):
    tag += "c" + hashlib.sha256("\n".join(class_names).encode()).hexdigest()[:6]
  return tag


def _held_reducer(path: str, method: str):
  """(reducer, its options, format version) of the estimate of `method` at `path`, or None
  when it is not one that reads (the caller's message then stands)."""
  try:
    held = read_estimate(path)
    if held.method.strip().lower() != method:
      return None
    return make_reducer(method, **held.reducer_kwargs), held.reducer_kwargs, held.version
  except (OSError, ValueError):
    return None


def main(f: flags.FlagValues):
  """Checks every flag and the output file, then evaluates, writes and prints the estimate."""
  common.positive(f.batch_size, "batch_size")
  common.positive(f.num_images, "num_images", allow_none=True)
  if f.num_workers < 0:
    raise ValueError(f"--num_workers must be >= 0, got {f.num_workers}")
  common.check_output_dir(f.out_dir)
  common.check_data_flag(f)
  for name in ("tokens", "layer", "layers"):
    if f[name].present and not (f[name].value or "").strip():
      raise common.empty_flag(f[name])
  embedded = (f.model or common.EMBEDDED_MODEL) == common.EMBEDDED_MODEL
  if f["init_seed"].present and (f.weights or embedded):
    raise ValueError("--init_seed seeds random weights; it applies only to --model without "
                     "--weights (and not to the embedded vit_digits)")
  if f.out_name is not None and (os.path.basename(f.out_name) != f.out_name
                                 or f.out_name in ("", ".", "..")):
    raise ValueError(f"--out_name={f.out_name} must be a file name, not a path (the file goes "
                     "in --out_dir)")
  if f.out_name and f.out_name.startswith("."):   # (hidden, beside the writers' .NAME. temps)
    raise ValueError(f"--out_name={f.out_name} is a hidden name (it starts with '.'): name "
                     "the estimate so that it shows, e.g. --out_name=estimate.json")
  if f.out_name and f.data != "digits":     # (est.png in a class folder broke the folder)
    check_not_read_as_an_image(os.path.join(f.out_dir, f.out_name), f.data, "out_name", "data")
  common.check_outside_data(f.out_dir, "out_dir", f)   # (a new results folder there was read
                                                       # as a class by the next run)
  if f["split"].present and f.data != "digits":
    raise ValueError(f"--split applies to --data=digits only, not --data={f.data}")
  cfg = common.model_config(f.model, f.weights)
  method = f.method.strip().lower()
  if (f["seed"].present and f.num_images is None and f.holdout_images is None
      and method != "random"):
    # (the file was named _s5 and recorded subset_seed 5 for the same images and numbers)
    raise ValueError(f"--seed draws the --num_images subset and the --holdout_images and seeds "
                     f"--method=random; with none of them (all images, --method={method}) it "
                     "changes nothing")
  options = common.parse_method_options(f.method_opts)
  problem = method == "random" and method_options_problem(method, options, {"seed": "--seed"})
  if problem:              # (the accepted options it names leave the seed to --seed)
    raise ValueError(problem)
  if "seed" in options and method == "random":
    raise ValueError(f"--method_opts gives seed={json.dumps(options['seed'])}: random drop's "
                     "seed is --seed (it seeds the --num_images subset too)")
  kwargs = {"seed": f.seed, **options} if method == "random" else options
  reducer = make_reducer(method, **kwargs)
  defaults = reducer_fields(make_reducer(method))
  named = {k: v for k, v in reducer_fields(reducer).items() if k != "seed" and v != defaults[k]}
  tokens = parse_tokens(cfg, f.tokens)
  if f.layers is not None:
    if f.layer is not None:
      raise ValueError("pass either --layer (one curve) or --layers (sensitivity table)")
    layers = parse_layers(f.layers, cfg.depth)
    try:                      # (--tokens is checked already: what is left is a repeated layer)
      points = estimate.sensitivity_points(cfg, tokens, layers, reducer)
    except ValueError as e:
      raise ValueError(f"--layers: {e}") from None
  else:
    layer_text = f.layer or ("embed" if method == "random" else "3")
    try:
      layers = [parse_layer(layer_text, cfg.depth)]
    except ValueError as e:      # (block 3, the default, on a model of fewer blocks)
      if f.layer:
        raise
      raise ValueError(f"{e}: the default --layer for --method={method}; pass one") from None
    points = estimate.token_points(cfg, tokens, reducer, layer=layers[0])
  layer_flag = "--layers" if f.layers is not None else "--layer"
  if None in layers and not reducer.supports_embedding:   # (was blamed on --tokens, default or
    raise ValueError(f"{layer_flag}: {method} cannot drop tokens after the embedding ('embed': "
                     "it needs attention); give a block index, or --method=random")  # not)
  for p in points:      # (refused by `evaluate`, after the model and the images had loaded)
    try:
      check_schedule(cfg, p.schedule, p.reducer)
    except ValueError as e:
      where = "after the embedding" if p.layer is None else f"at block {p.layer}"
      # (the fewest tokens one block leaves from all of them: what check_schedule allows)
      lowest = cfg.num_tokens - reducer.max_remove(cfg.num_tokens, cfg.num_prefix_tokens)
      if f.tokens is not None:
        raise ValueError(f"--tokens: {p.tokens} tokens {where}: {e} (give counts from {lowest} "
                         "up)") from None
      raise ValueError(
          f"the default token grid ({len(tokens)} counts over [{tokens[0]}, {tokens[-1]}]) holds "
          f"{p.tokens} tokens {where}: {e}; give --tokens with counts from {lowest} up, e.g. "
          f"--tokens={lowest}:{cfg.num_tokens}:{max(1, (cfg.num_tokens - lowest) // 8)}") from None
  memory.check_batch_fits(cfg, [f.batch_size], f.dtype, evaluation=True)
  cfg, params, source = common.load_model(f.model, f.weights, f.init_seed)
  trained_split = common.check_digits_split(source, f.data)
  with common.named_by_flag(*common.SUBSET_PARAMS):
    data = estimate.load_eval_data(f.data, num_images=f.num_images, seed=f.seed, split=f.split,
                                   class_names=common.class_names(source),
                                   num_classes=cfg.num_classes, holdout_images=f.holdout_images,
                                   flag="--data")
  if method != "random":                  # (random drop: --seed seeds the reducer too)
    common.check_subset_seed_used(f, data)
  data_tag = "digits-" + f.split if f.data == "digits" else os.path.basename(
      os.path.normpath(f.data))
  name = f.out_name or default_out_name(
      cfg, method, layers, data_tag, data.info["num_examples"], f.seed,
      None if f.tokens is None else tokens, f.dtype, f.holdout_images,
      weights_tag(params, common.class_names(source)), named)
  out = os.path.join(f.out_dir, name)
  if not f.out_name and os.path.lexists(out):         # the derived name
    atomic.check_replaceable_json(out, ESTIMATE_FORMAT)              # not ours?
    if not f.overwrite:
      try:                  # (the name holds the folder's name, not its path)
        before = jsonio.read_json(out, "estimate").get("data", {})
        before, kind = before.get("source"), before.get("kind")
      except (OSError, ValueError, AttributeError):
        before = kind = None
      if (f.data != "digits" and isinstance(before, str)
          and (kind != "imagefolder"
               or os.path.realpath(before) != os.path.realpath(data.info["source"]))):
        what = (f"of {common.shown(before)}, another folder of the same name"
                if kind == "imagefolder" else "of the bundled digits (--data=digits)")
        raise FileExistsError(f"{out} already exists, an estimate {what} (pass --out_name to "
                              "write another file, or --overwrite to replace it)")
      held = _held_reducer(out, method)
      if held is not None and held[0] != reducer:   # (a version-1 file: per-layer random drop)
        raise FileExistsError(
            f"{out} already exists, an estimate of {method_label(method, held[1])} (format "
            f"version {held[2]}), not {method_label(method, reducer_fields(reducer))} (pass "
            "--out_name to write another file, or --overwrite to replace it)")
      raise FileExistsError(f"{out} already exists, an estimate with these flags (pass "
                            "--overwrite to replace it, or --out_name to write another file)")
  atomic.check_output_json(out, ESTIMATE_FORMAT, "out_name", overwrite=f.overwrite)
  began = atomic.file_stamp(out)      # (--overwrite replaces this file, not one written since)
  images = len(data.indices)
  if f.batch_size > images:     # (before the work: the same results, compute spent on padding)
    print(f"note: --batch_size={f.batch_size} is above the {console.counted(images, 'image')}: "
          f"each point runs one batch padded with "
          f"{console.counted(f.batch_size - images, 'ignored row')} "
          f"(--batch_size={images} does the same with less work)")
  result = estimate.evaluate(cfg, params, data.batches(cfg, f.batch_size, f.num_workers),
                             points, labelled=data.labelled, dtype=f.dtype, shard=f.shard)
  record = estimate.estimate_record(
      cfg=cfg, params=params, weights_source=source, data_info=data.info, method=method,
      method_kwargs=kwargs, seed=f.seed, points=points, result=result,
      labelled=data.labelled, dtype=f.dtype)
  try:
    path = write_estimate(out, record, overwrite=f.overwrite, replaces=began)
  except OSError as e:    # taken meanwhile (a concurrent run of these flags), or its folder gone:
    # the estimate is kept beside it (its minutes of evaluation were lost with the library's
    # 'pass overwrite=True' wording)
    meanwhile = (isinstance(e, FileExistsError) and not isinstance(e, atomic.ForeignOutputError)
                 and os.path.exists(out))       # (another run's, written since this one began)
    why = (f"{common.shown(out)} was written by another run meanwhile (two runs of one "
           "--out_name at once: give each run its own)" if meanwhile else str(e))
    # (not "pass --overwrite": that replaces the other run's estimate, kept here beside it)
    atomic.keep_json_beside(out, record.to_json(), ESTIMATE_FORMAT, e, why)
  # A run killed while writing left its temporaries under a name of its flags, which no later
  # run of other flags removed: swept here, for the names estimates of this model take (not
  # every '.*.json.lock' of a shared folder).
  atomic.cleanup_stale_named(f.out_dir, _slug(f"{record.config.name}_"), ".json")
  print(table_text(record))
  if common.is_random_init(source):    # (a probe: 'accuracy 0.1031', nothing more said)
    print(f"note: the weights are random ({source}: --model without --weights): these numbers "
          "are of an untrained model, for plumbing checks only")
  if not record.labelled and f.data != "digits":   # (the digits: their own warning says why)
    print(f"note: {UNLABELLED_NOTE}: agreement and KL against the unpruned model only")
  if f.data == "digits" and f.split != "test" and trained_split is not None:
    print(f"note: --split={f.split} holds the digits these weights were trained on: the "
          "accuracies are optimistic (--split=test is held out)")
  print(f"wrote {common.shown(path)}")
  return record


if __name__ == "__main__":
  common.run(main, define_flags)
