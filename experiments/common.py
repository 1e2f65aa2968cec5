"""Helpers shared by the experiments CLIs: the one entry point (`run`), up-front checks of flag
values and output paths, and the --model/--weights rule.

Every CLI is `define_flags(fv)` + `main(f)` (f: the parsed `flags.FlagValues`) and ends with
`common.run(main, define_flags)`. Flags are registered only when the module runs as a script, so
importing a CLI (tests, other code) registers nothing; `parse(define_flags, argv)` parses into a
fresh `FlagValues` for tests, and `run_in_process` runs a CLI as `run` does, without a process.

The contract of `run` (the README's "What happens when things go wrong"):
  * a bad flag value, a bad input file, an occupied or unwritable output, a batch that cannot
    fit in memory: one line `error: <message>` on stderr, no traceback, no help text, exit 1;
  * flag syntax (unknown flag, a value of the wrong type, stray positional arguments): the same
    one line plus `(see --help)`, exit 2;
  * Ctrl-C: `error: interrupted`, exit 130; SIGTERM: `error: terminated`, exit 143;
  * --help (and absl's -?, --helpshort, --helpfull): the usage on stdout, exit 0.
Checks run before any work, so a refused run changes no file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from vitprune import atomic
from vitprune import console
from vitprune import jsonio
from vitprune.edge.targets import EdgeError
from vitprune.registry import get_config

# The embedded default: a registered model whose trained weights ship in the repository.
EMBEDDED_MODEL = "vit_digits"
EMBEDDED_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "weights", "vit_digits")

# What the library raises on bad input (ValueError covers jsonio.FormatError and its record,
# artifact, estimate and solve errors, EdgeError; OSError covers missing, occupied (incl.
# atomic.ForeignOutputError), unwritable and wrong-kind paths).
INPUT_ERRORS = (ValueError, KeyError, OSError, EdgeError, ImportError, MemoryError,
                FloatingPointError)   # non-finite outputs (vitprune.prune)
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = (console.EXIT_ERROR, console.EXIT_USAGE,
                                           console.EXIT_INTERRUPTED)
MAX_SEED = console.MAX_SEED


one_line = console.one_line


def shown(path: Any) -> str:
  """A path as a success line prints it: its control characters escaped (`console.printable`: a
  name holding a newline or a terminal escape split the line or recoloured the terminal)."""
  return console.printable(str(path))


fail = console.fail


def quiet_logging(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Shows warnings and errors only (orbax logs every checkpoint step at INFO), unless the user
  passed --verbosity."""
  if "verbosity" not in fv or not fv["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def check_finite(fv: flags.FlagValues) -> None:
  """Every float flag must hold a finite number (`--alpha=nan`, `--min_run_time=inf`)."""
  for name, flag in sorted(fv._flags().items()):  # pylint: disable=protected-access
    v = flag.value
    if isinstance(v, float) and not math.isfinite(v) and name == flag.name:
      raise ValueError(f"--{name}={v} is not a finite number")


EMPTY_MEANS_NONE = "('' for none)"     # in a flag's help: an empty value is meaningful


def check_not_empty(fv: flags.FlagValues) -> None:
  """A string flag given as empty (`--model=`, `--solution=`) is refused, unless empty is its
  default or its help says `EMPTY_MEANS_NONE`: it was read as "not given" and the run went on
  with the default."""
  for name, flag in sorted(fv._flags().items()):  # pylint: disable=protected-access
    if (name == flag.name and flag.present and isinstance(flag.value, str) and not flag.value
        and flag.default != "" and EMPTY_MEANS_NONE not in (flag.help or "")):
      raise empty_flag(flag)


def empty_flag(flag: flags.Flag) -> ValueError:
  """The error of a string flag given empty (or blank), naming the default it leaves out: its
  own, or what its help says the CLI chooses (`default_in_help`)."""
  said = default_in_help(flag.help)
  hint = (f" (leave it out for the default {flag.default})" if flag.default is not None
          else f" (leave it out for the default: {said})" if said else "")
  return ValueError(f"--{flag.name} is empty{hint}")


def default_in_help(text: Optional[str]) -> Optional[str]:
  """What a flag's help says its default is when the flag's own default is None and the CLI
  chooses one (`(default: X; ...)` or `default X.`), its first clause; None when it says none
  (`profile --out_dir=` was refused without naming its default, as the others do)."""
  found = re.search(r"\bdefault:? ([^;()]+)", text or "")
  return found.group(1).strip().rstrip(".").strip() or None if found else None


def parse(define_flags: Callable[[flags.FlagValues], None], argv: Sequence[str] = ()
          ) -> flags.FlagValues:
  """A fresh FlagValues with the CLI's flags, parsed from `argv` (without the program name) and
  checked for non-finite floats and stray arguments; for tests and library callers."""
  fv = flags.FlagValues()
  define_flags(fv)
  rest = fv(["prog", *argv])[1:]
  if rest:                                # as the CLIs' `run` refuses them
    raise ValueError(f"unexpected arguments: {rest}")
  _check_parsed(fv)
  return fv


def _check_parsed(fv: flags.FlagValues) -> None:
  """What every parse goes through after absl's: '~' expanded, floats finite, no empty flag."""
  console.expand_home(fv)
  check_finite(fv)
  check_not_empty(fv)


def command_line(module: str, fv: flags.FlagValues) -> str:
  """`python -m <module>` with the flags given on the command line (not the defaults), in name
  order, shell-quoted: the run's record of how it was started (in-process runs too)."""
  given = [arg for name in sorted(fv) if fv[name].present and name == fv[name].name
           for arg in fv[name].serialize().split("\n")]      # a multi flag: one per value
  return " ".join(["python", "-m", module] + [shlex.quote(a) for a in given])


def _run_parsed(main: Callable[[flags.FlagValues], Any], fv: flags.FlagValues,
                argv: List[str], whole_process: bool = False) -> None:
  """Runs `main(fv)` on parsed flags (`argv`: what parsing left, program name first) and maps
  errors to one line and an exit code (see the module doc); `whole_process`: the CLI owns the
  process (`run`), so an interrupt ends it at once (`_exit_interrupted`)."""
  try:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_logging(fv)
    _check_parsed(fv)
    check_jax_platforms()
    try:
      main(fv)
    except RuntimeError as e:   # (jax's JaxRuntimeError: a 51-line traceback)
      oom = device_out_of_memory(e)
      if oom is None:
        raise
      raise oom from None
    if whole_process:
      console.finish_quietly()          # done: a signal from now on must not fail it, and one
    console.raise_if_interrupted()      # before (even swallowed by a callback) still does
  except (app.UsageError, flags.Error) as e:
    fail(e, EXIT_USAGE, hint=True)
  except INPUT_ERRORS as e:
    if not console.interrupted():
      fail(e)
    if whole_process:    # a failure while the interrupt was held (publishing): both are said
      _exit_interrupted(e)
    fail(*console.interrupt_exit(e))
  except KeyboardInterrupt as e:    # (with the failure it was held during, if any)
    if whole_process:
      _exit_interrupted(console.failure_of(e))
    fail(*console.interrupt_exit(console.failure_of(e)))


def device_out_of_memory(e: RuntimeError) -> Optional[MemoryError]:
  """A MemoryError (one line) for a runtime's RESOURCE_EXHAUSTED (the device out of memory for
  a batch the up-front check let through: the host's MemAvailable is all it knows, not a GPU's
  memory or every buffer a run holds), else None (another RuntimeError: a bug, kept whole)."""
  line = console.resource_exhausted(e)
  if line is None:
    return None
  return MemoryError(f"the device ran out of memory ({line[:200]}): try a smaller batch size")


def check_jax_platforms(environ: Optional[Dict[str, str]] = None) -> None:
  """ValueError naming JAX_PLATFORMS (or JAX_PLATFORM_NAME) when it asks for a backend JAX
  cannot start here (`gpu` on a CPU-only machine was a 66-line traceback at the first array, or
  an empty AssertionError blamed on the weights); nothing is checked when neither is set, or
  for `cpu` alone (JAX always has it; starting it early would only move XLA's start-up logs)."""
  env = os.environ if environ is None else environ
  name = next((k for k in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME") if env.get(k)), None)
  if name is None or {p.strip() for p in env[name].split(",")} == {"cpu"}:   # always there
    return
  import jax  # pylint: disable=g-import-not-at-top  (only when a platform is forced)
  try:
    jax.devices()
  except (RuntimeError, AssertionError, ValueError) as e:
    reason = one_line(e)
    known = re.search(r"not in the list of known backends: \[([^\]]*)\]", reason)
    if known:            # (JAX names the backend it tried last: 'rocm' for a 'gpu' asked for)
      names = known.group(1).replace("'", "")
      reason = f"this jax build has no such backend; it knows {names}"
    elif not str(e).strip():
      reason = (f"jax raised {type(e).__name__} with no message: is a jax build with that "
                "backend installed?")
    raise ValueError(f"{name}={env[name]!r}: JAX cannot start that backend on this machine "
                     f"({reason}); unset {name} or name an available one, e.g. cpu") from None


def _exit_interrupted(error: Optional[BaseException] = None) -> None:
  """Ctrl-C (or SIGTERM) in a CLI process: `console.exit_interrupted` (the error line, exit
  130 or 143 at once, without XLA's teardown), removing this process's temporaries
  (`atomic.remove_at_exit`: the temporary XLA cache)."""
  console.exit_interrupted(error, cleanup=atomic.remove_exit_paths)


def _parse_or_fail(fv: flags.FlagValues, argv: List[str]) -> List[str]:
  """Parsed argv, or exit: EXIT_USAGE with one line on bad flag syntax or --only_check_args
  (`console.refuse_only_check_args`), 0 after --help."""
  try:
    left = fv(argv)
  except flags.Error as e:     # (absl's boolean parser said "('Non-boolean argument to boolean
    fail(re.sub(r"\('Non-boolean argument to boolean flag', (.*)\)$",   # flag', '2')")
                r"\1 is not a boolean (true or false)", str(e)), EXIT_USAGE, hint=True)
  except SystemExit as e:
    console.exit_after_help(e)
  console.refuse_only_check_args(fv)
  return left


def run(main: Callable[[flags.FlagValues], Any],
        define_flags: Callable[[flags.FlagValues], None]) -> None:
  """The entry point of every CLI: registers and parses the flags, runs `main(FLAGS)` and maps
  errors to one line and an exit code (see the module doc)."""
  fv = flags.FLAGS
  define_flags(fv)
  console.setup_process()
  try:
    app.run(lambda argv: _run_parsed(main, fv, argv, whole_process=True),
            flags_parser=lambda argv: _parse_or_fail(fv, argv))
  except KeyboardInterrupt:     # in absl's start-up, before `_run_parsed` (was a traceback)
    _exit_interrupted()


def run_in_process(main: Callable[[flags.FlagValues], Any],
                   define_flags: Callable[[flags.FlagValues], None],
                   argv: Sequence[str]) -> None:
  """`run` without absl's `app.run`, on a fresh FlagValues (`argv` without the program name):
  the CLI's own flags, checks, one-line errors and exit codes (SystemExit); for tests, which then
  need no subprocess per bad input. Unlike `run`: absl's global flags (--helpshort,
  --verbosity) are unknown here, and logging's verbosity is set for the whole process."""
  fv = flags.FlagValues()
  define_flags(fv)
  _run_parsed(main, fv, _parse_or_fail(fv, ["prog", *argv]))


# ----------------------------------------------------------------------------- up-front checks


@contextlib.contextmanager
def named_by_flag(*params: str) -> Iterator[None]:
  """A library refusal that starts with the name of one of `params`, parameters the CLI's
  flags of the same name set ('num_images=5000 exceeds the 359 images available',
  'label_smoothing must be in [0, 1)'), names the flag ('--num_images=5000 ...'): it reached
  the CLIs as the bare parameter."""
  try:
    yield
  except ValueError as e:
    if str(e).startswith(params):
      raise ValueError(f"--{e}") from None
    raise


SUBSET_PARAMS = ("num_images", "holdout_images")   # `estimate.load_eval_data`'s subset sizes


def positive(value: Optional[int], flag: str, allow_none: bool = False) -> None:
  """ValueError unless `value` >= 1 (None passes when `allow_none`)."""
  if value is None and allow_none:
    return
  if value is None or value < 1:
    raise ValueError(f"--{flag} must be >= 1, got {value}")


def given_flags(fv: flags.FlagValues, names: Sequence[str]) -> List[str]:
  """['--name', ...] of `names` given on the command line (a default does not count)."""
  return [f"--{n}" for n in names if fv[n].present]


def applies(flag_names: Sequence[str]) -> str:
  """'--a applies' / '--a, --b apply': the start of a refusal naming flags a run does not read."""
  return f"{', '.join(flag_names)} {'applies' if len(flag_names) == 1 else 'apply'}"


def check_names_once(names: Sequence[str], flag: str, what: str = "entry") -> None:
  """ValueError naming `--flag` unless `names` is non-empty and names each entry once, case-blind
  (methods and models are looked up case-blind: 'pomt,POMT' measured one method twice)."""
  if not names or len({n.lower() for n in names}) != len(names):
    raise ValueError(f"--{flag} must name each {what} once, got {list(names)}")


def parse_ints(values: Sequence[str], flag: str) -> List[int]:
  """Positive distinct ints from a list flag; ValueError naming the flag."""
  if not values:
    raise ValueError(f"--{flag} is empty")
  out = []
  for v in values:
    if not re.fullmatch(r"-?[0-9]+", str(v).strip()):     # int() also reads '+8', '1_0', '٨'
      raise ValueError(f"--{flag}: {v!r} is not an integer")
    n = int(str(v).strip())
    if n < 1:
      raise ValueError(f"--{flag}: {n} must be >= 1")
    out.append(n)
  if len(set(out)) != len(out):
    raise ValueError(f"--{flag}: duplicate values in {out}")
  return out


def parse_method_options(items: Sequence[str], flag: str = "--method_opts") -> dict:
  """['k=v', ...] -> {k: json value or string}; true/false in any case are booleans (Python's
  True/False too); the reducer checks each option's type (`make_reducer`)."""
  opts = {}
  for item in items:
    if "=" not in item:
      raise ValueError(f"{flag} entry {item!r} is not key=value")
    key, v = item.split("=", 1)
    key = key.strip()
    if not key:
      raise ValueError(f"{flag} entry {item!r} has no key (key=value)")
    if key in opts:
      raise ValueError(f"{flag} gives {key!r} twice")
    if v.strip().lower() in ("true", "false"):
      opts[key] = v.strip().lower() == "true"
      continue
    try:
      opts[key] = json.loads(v)
    except json.JSONDecodeError:
      opts[key] = v
  return opts


def check_subset_seed_used(fv: flags.FlagValues, data: Any) -> None:
  """ValueError when --seed was given only to draw the --num_images subset of `data` (an
  `estimate.EvalData`, without --holdout_images) and that subset is every image: it changed
  nothing, yet named the file _s<seed> and recorded a subset seed (call where --seed seeds
  nothing else, e.g. not with --method=random)."""
  if (fv["seed"].present and fv.holdout_images is None and fv.num_images is not None
      and len(data.indices) == data.available):
    raise ValueError(f"--seed draws the --num_images subset, but --num_images={fv.num_images} "
                     f"is every one of the {data.available} images: it changes nothing")


def check_output_dir(path: str, flag: str = "out_dir", published: bool = False) -> None:
  """`path` is (or can become) a writable directory; raises naming the flag otherwise.
  `published`: the folder itself is published whole through a hidden sibling (the main job's),
  so its name must leave room for that (`atomic.check_name_fits`) and the folder above must be
  writable, even where the folder exists; files written inside it make their temporaries there,
  whatever its name."""
  if not path:
    raise ValueError(f"--{flag} is empty")
  if published:
    atomic.check_name_fits(path, flag)
  bare = atomic.without_trailing_sep(path)   # (not published whole: files are written into it)
  atomic.check_outside_published(bare, flag, itself=not published)
  if os.path.lexists(bare):
    if not os.path.isdir(path):
      raise NotADirectoryError(f"--{flag}={path} is {atomic.describe(bare)}, not a directory")
    atomic.check_writable_dir(path, f"--{flag}={path}")
    if not published:
      return
  # (published whole: its hidden sibling is made, and renamed in, in the folder above it; an
  # --out_dir of our own under a folder nothing can be created in failed after all the work)
  atomic.check_creatable(path, flag)


def write_result(path: str, doc: Dict[str, Any], fmt: str, *,
                 replaces: Any = atomic.ANY_OUTPUT, **json_kw) -> str:
  """Writes results `doc` (which carries `"format": fmt`) to `path`, checked up front with
  `atomic.check_output_json` (re-checked here under the writers' lock: a file made there during
  the run is refused, not replaced; with `replaces`, the `atomic.file_stamp` of `path` when the
  run began, so is a file another run wrote there since). Replacing results of another command
  says so (a run with other settings replaced them without a word). When `path` was taken
  meanwhile or cannot be written, the results are written beside it
  (`atomic.replace_json_or_keep`): a benchmark's minutes of measurement were lost."""
  if doc.get("format") != fmt:
    raise ValueError(f"results for {path} must carry format {fmt!r}")
  try:
    old = jsonio.read_json(path, "results").get("command")
  except (OSError, ValueError):
    old = None
  if old and doc.get("command") and old != doc["command"]:
    print(f"note: replacing {shown(path)}, the results of: {shown(old)}")
  return atomic.replace_json_or_keep(path, doc, fmt, replaces=replaces, **json_kw)


def check_new_dir(path: str, flag: str = "out", overwrite: bool = False,
                  is_ours: Optional[Callable[[str], bool]] = None) -> None:
  """An output directory the CLI creates whole: its name fits, `atomic.check_output_dir_target`
  (not a file, absent or empty unless `overwrite`; with `is_ours`, one that `overwrite` may
  replace, else `atomic.ForeignOutputError` before any work, not after it), and creatable;
  messages name `--flag`."""
  if not path:
    raise ValueError(f"--{flag} is required")
  atomic.check_name_fits(path, flag)
  atomic.check_output_dir_target(path, overwrite, is_ours, "pass --overwrite to replace it", flag)
  atomic.check_creatable(path, flag)


# ----------------------------------------------------------------------------- models

# _MODEL_CODE: vitprune.checkpoint / vitprune.model are imported inside the functions below so
# that experiments.run_deployed, which needs only the artifact, never imports the model code.


def class_names(weights_source: str) -> Optional[Tuple[str, ...]]:
  """The class names recorded with the weights `load_model` loaded (None for random weights
  or weights that record none): image-folder labels are matched to them by name."""
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top  (lazy: see _MODEL_CODE)
  return checkpoint.source_class_names(weights_source)


def check_digits_split(weights_source: str, data: Optional[str],
                       bundled: str = "--data=digits") -> Optional[Tuple[int, float]]:
  """ValueError when the weights were trained on the digits (`train_digits`) and `data` holds
  some of their training images: 'digits' (the test split of seed 0, test fraction 0.2) for
  weights trained on another split (`--split_seed`), or a folder `digits_images` wrote (its
  file names are the digits' indices) of any split that overlaps their training split. Every
  score on those would be inflated, with no warning. `bundled`: how the refusal names the
  bundled digits (prune has no --data). Returns the digits split the weights were trained on,
  (seed, test fraction), or None (not trained on the digits, or no data)."""
  if not data or not os.path.isdir(weights_source):
    return None
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top  (lazy: see _MODEL_CODE)
  from vitprune import digits as digits_lib  # pylint: disable=g-import-not-at-top
  meta = checkpoint.read_weights_config(weights_source)[1]
  who = (f"the embedded weights {weights_source}"
         if os.path.realpath(weights_source) == os.path.realpath(EMBEDDED_WEIGHTS)
         else f"--weights={weights_source}")                # (no --weights given: not that)
  trained = digits_lib.digits_training_split(meta)
  if data != "digits":
    digits_lib.check_digits_folder(data, meta, who)
    return trained
  if trained is not None and trained != (0, 0.2):
    raise ValueError(f"{who} were trained on the digits split of seed "
                     f"{trained[0]} (test fraction {trained[1]}), but {bundled} is the test "
                     "split of seed 0 (0.2): most of it is their training data, so every score "
                     "would be inflated")
  return trained


def is_random_init(weights_source: str) -> bool:
  """Whether `load_model`'s source description names random weights ('init_params(seed=S)')."""
  return weights_source.startswith("init_params(")


_DATA_WORDS = {"digits": "the bundled digits", "none": "no data (latency only)"}


def data_word(value: str) -> str:
  """What a data flag's value is read as: 'none' in any case and spacing (benchmark's
  `--data=None` too), else the value itself ('Digits' is a folder, not the bundled digits)."""
  return "none" if value and value.strip().lower() == "none" else value


def check_data_flag(fv: flags.FlagValues, flag: str = "data",
                    words: Sequence[str] = ("digits",)) -> None:
  """ValueError naming `--flag` unless it is one of `words` (`_DATA_WORDS`: a meaning of its
  own) or an existing folder (a file or a mistyped path was "data '...' is neither 'digits' nor
  an existing directory", the flag unnamed, after the model had loaded). A word that is also a
  folder in the working directory is refused too, when given: which one was meant?
  (`prune --images=digits` reads the folder; `estimate --data=digits` read the bundled digits
  beside it without a word.) Left at its default, a word means what it always means."""
  value = fv[flag].value
  word = data_word(value)
  if word in words:
    if fv[flag].present and os.path.isdir(value):
      default = fv[flag].default
      raise ValueError(f"--{flag}={value} means {_DATA_WORDS[word]}, and ./{value} is also a "
                       f"folder here: pass --{flag}=./{value} for the folder"
                       + (f", or leave --{flag} out for {_DATA_WORDS[word]}" if word == default
                          else ""))
    return
  if not os.path.isdir(value):
    what = ("does not exist" if not os.path.lexists(value) else
            f"is {atomic.describe(value)}, not a folder")
    choices = ["a folder of images"] + [f"{w!r} for {_DATA_WORDS[w]}" for w in words]
    raise ValueError(f"--{flag}={value} {what}: give {', '.join(choices[:-1])} or "
                     f"{choices[-1]}")


def check_outside_data(out: str, out_flag: str, fv: flags.FlagValues, data_flag: str = "data",
                       words: Sequence[str] = ("digits",)) -> None:
  """ValueError when `--out_flag` is, or lies inside, the image folder `--data_flag`: the plots
  written there were read as images by the next run with the same flags (a digit class grew by
  two PNGs, and the accuracy fell without a word), or in a folder it reads through a link (a
  class folder linked from elsewhere). A data word (`words`, as `check_data_flag` reads them:
  'none' in any case) names no folder."""
  from vitprune import data as data_lib  # pylint: disable=g-import-not-at-top  (PIL: lazily)
  data = fv[data_flag].value
  if not data or data_word(data) in words or not os.path.isdir(data):
    return
  if data_lib.inside_images(out, data):
    raise ValueError(f"--{out_flag}={out} is inside --{data_flag}={data}: what it writes there "
                     "would be read with the images next time (a plot as an image, a new folder "
                     "as a class); write elsewhere")


def given_model(fv: flags.FlagValues) -> Optional[str]:
  """`--model` as given, None when left at its default (a default of 'vit_digits' with other
  `--weights` is not a contradiction; the same name given explicitly is)."""
  return fv.model if fv["model"].present else None


def model_config(model: Optional[str], weights: Optional[str]):
  """The config `load_model` would load, without loading parameters (for up-front checks)."""
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top  (lazy: see _MODEL_CODE)
  given, model = model, model or EMBEDDED_MODEL
  if not weights and model == EMBEDDED_MODEL:
    weights = EMBEDDED_WEIGHTS
  if weights:       # (a missing folder, a file, a folder of other things: named by the flag)
    cfg, _ = checkpoint.read_weights_config(weights, named=f"--weights={weights}")
    if given is not None and given != cfg.name:     # (--model=vit_digits too: it was let by)
      raise ValueError(f"--model={given!r} but {weights} holds {cfg.name!r}")
    return cfg
  return get_config(model)


def load_model(model: Optional[str], weights: Optional[str], seed: int = 0
               ) -> Tuple[Any, Any, str]:
  """The `--model` / `--weights` rule every CLI follows -> (cfg, params, source description).

  `--weights=DIR`: the config and parameters stored there (`--model`, if also given, must name
  the same model). Otherwise `--model` (default: the embedded `vit_digits`): the embedded trained
  weights for `vit_digits`, random `init_params(cfg, seed)` for any other registered name.
  Raises FileNotFoundError / ValueError / KeyError naming the problem.
  """
  from vitprune import checkpoint  # pylint: disable=g-import-not-at-top  (lazy: see _MODEL_CODE)
  from vitprune import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg = model_config(model, weights)
  if not weights and (model or EMBEDDED_MODEL) == EMBEDDED_MODEL:
    weights = EMBEDDED_WEIGHTS
  if weights:
    _, params = checkpoint.load_weights(weights)
    note_smoke_run(weights, checkpoint.read_weights_config(weights)[1])
    return cfg, params, os.path.abspath(weights)
  return cfg, model_lib.init_params(cfg, seed), f"init_params(seed={seed})"


def note_smoke_run(weights: str, meta: Any) -> None:
  """A `note:` on stderr when `weights` were trained with `train_digits --max_steps` (a smoke
  run, its held-out accuracy recorded): such weights written over weights/vit_digits were used
  by every CLI afterwards with nothing said (a walkthrough: 'unpruned 0.0938')."""
  steps = meta.get("max_steps") if isinstance(meta, dict) else None
  if steps is None:
    return
  acc = meta.get("test_accuracy")
  held = f", held-out accuracy {acc:.4f}" if isinstance(acc, float) else ""
  print(f"note: {os.path.abspath(weights)} were trained for "
        f"{console.counted(steps, 'step')} only (train_digits --max_steps, a smoke run{held})",
        file=sys.stderr)
