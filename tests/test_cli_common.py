"""experiments/common.py: the --model/--weights rule every CLI shares, the recorded command."""
import glob
import json
import os
import re

import numpy as np
import pytest

from experiments import common
from vitprune import atomic, checkpoint, model
from vitprune.registry import get_config


def test_default_is_the_embedded_trained_model():
  cfg, params, source = common.load_model(None, None)
  assert cfg == get_config("vit_digits") and source == common.EMBEDDED_WEIGHTS
  _, stored = checkpoint.load_weights(common.EMBEDDED_WEIGHTS)
  np.testing.assert_array_equal(params["head"]["kernel"], stored["head"]["kernel"])
  assert common.load_model("vit_digits", None)[2] == common.EMBEDDED_WEIGHTS


def test_other_models_get_seeded_random_weights():
  cfg, params, source = common.load_model("test_tiny_vit", None, seed=3)
  assert cfg.name == "test_tiny_vit" and source == "init_params(seed=3)"
  want = model.init_params(cfg, 3)
  np.testing.assert_array_equal(params["pos_embed"], want["pos_embed"])


def test_weights_directory_and_errors(tmp_path):
  cfg = get_config("test_tiny_distilled")
  wdir = checkpoint.save_weights(str(tmp_path / "w"), cfg, model.init_params(cfg, 1))
  got, _, source = common.load_model(None, wdir)
  assert got == cfg and source == os.path.abspath(wdir)
  assert common.load_model("test_tiny_distilled", wdir)[0] == cfg
  with pytest.raises(ValueError,
                     match="--model='test_tiny_vit' but .* holds 'test_tiny_distilled'"):
    common.load_model("test_tiny_vit", wdir)
  with pytest.raises(FileNotFoundError, match=f"^--weights={tmp_path / 'missing'} does not exist$"):
    common.load_model(None, str(tmp_path / "missing"))
  with pytest.raises(KeyError, match="Did you mean"):
    common.load_model("deit_smal_patch16_224", None)


def test_command_line_records_the_given_flags_quoted():
  from experiments import train_digits  # pylint: disable=g-import-not-at-top
  fv = common.parse(train_digits.define_flags, ["--out=/tmp/a b", "--epochs=3", "--overwrite",
                                                "--epochs=2"])
  assert common.command_line("experiments.train_digits", fv) == (
      "python -m experiments.train_digits --epochs=2 '--out=/tmp/a b' --overwrite")
  assert common.command_line("experiments.train_digits",
                             common.parse(train_digits.define_flags)) == (
      "python -m experiments.train_digits")


def test_command_line_gives_a_multi_flag_one_argument_per_value():
  from experiments import deploy  # pylint: disable=g-import-not-at-top
  fv = common.parse(deploy.define_flags, ["--target=iree:host", "--target=jax,iree:vulkan"])
  assert common.command_line("experiments.deploy", fv) == (
      "python -m experiments.deploy --target=iree:host --target=jax,iree:vulkan")


def test_an_exception_without_text_is_named_not_printed_empty():
  """numpy's MemoryError has no message: the CLI printed `error: ` and nothing else."""
  assert common.one_line(MemoryError()) == "out of memory (MemoryError)"
  assert common.one_line(MemoryError("Unable to allocate 1 GiB")) == "Unable to allocate 1 GiB"
  assert common.one_line(OSError()) == "OSError"
  assert common.one_line(KeyError("schedule")) == "schedule"
  assert common.one_line("") == ""


def test_an_error_line_escapes_control_characters():
  """A file name holding a terminal escape went into the error line raw (it recoloured the
  terminal); whitespace, a newline included, is joined as before."""
  assert common.one_line("no file a\x1b[31mb\nc\x00") == "no file a\\x1b[31mb c\\x00"


def test_a_string_flag_given_empty_is_refused_unless_empty_is_its_default():
  """`--solution=` ran the benchmark without a solution, `--model=` ran vit_digits."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(fv):
    flags.DEFINE_string("solution", None, "", flag_values=fv)
    flags.DEFINE_string("model", "vit_digits", "", flag_values=fv)
    flags.DEFINE_string("job_flags", "", "", flag_values=fv)
    flags.DEFINE_list("sizes", ["1"], "", flag_values=fv)
    flags.DEFINE_string("cache_dir", "c", "Cache ('' for none).", flag_values=fv)
    flags.DEFINE_string("grid", "a,b", "Grid (default: every count).", flag_values=fv)

  common.parse(define, ["--job_flags=", "--model=deit"])          # empty default: fine
  assert common.parse(define, ["--cache_dir="]).cache_dir == ""   # documented as meaningful
  with pytest.raises(ValueError, match=r"^--solution is empty$"):
    common.parse(define, ["--solution="])
  with pytest.raises(ValueError, match=r"^--model is empty \(leave it out for the default "
                     r"vit_digits\)$"):
    common.parse(define, ["--model="])
  with pytest.raises(ValueError, match=r"^--grid is empty \(leave it out for the default "
                     r"a,b\)$"):                  # its own default, not what its help says
    common.parse(define, ["--grid="])
  # A default the CLI chooses (the flag's own is None) is named as its help says it.
  from experiments import profile as profile_cli
  with pytest.raises(ValueError, match=r"^--out_dir is empty \(leave it out for the default: "
                     r"outputs/pipeline/ for the main job, with profile/, estimate/, solve/ and "
                     r"summary.json\)$"):
    common.parse(profile_cli.define_flags, ["--out_dir="])
  assert common.parse(define, ["--sizes="]).sizes == []            # lists: their own checks
  with pytest.raises(ValueError, match=r"^unexpected arguments: \['x'\]$"):
    common.parse(define, ["x"])


def test_warnings_print_on_one_line():
  """PIL's DecompressionBombWarning (an 89-179 Mpx image) printed the library's file and its
  source line as a second line."""
  import warnings  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  text = console.one_line_warning(UserWarning("Image size (95000000 pixels)\n exceeds"),
                                  UserWarning, "/x/PIL/Image.py", 3593, "warnings.warn(")
  assert text == "warning: UserWarning: Image size (95000000 pixels) exceeds\n"
  assert console.one_line_warning(UserWarning("a\x1b[31mb"), UserWarning, "f", 1) == \
      "warning: UserWarning: a\\x1b[31mb\n"                  # (a terminal escape, raw)
  assert warnings.formatwarning is not console.one_line_warning   # only a CLI process sets it


def test_a_number_above_its_limit_never_prints_as_the_limit():
  """A probe read "an IQR of 10% of its median, above 10%" (10.02 %): `console.shown_apart`
  adds the digits that tell two numbers apart, and only those, until they order as the numbers
  do (a review: '12.3' for 12.345 above 12.34 read as below it)."""
  from vitprune import console  # pylint: disable=g-import-not-at-top

  def value(a, b, *args):
    return console.shown_apart(a, b, *args)[0]
  assert value(10.02, 10, 3) == "10.02"
  assert value(10.0001, 10, 3) == "10.0001"
  assert value(12.34, 10, 3) == "12.3"             # (3 digits when they are enough)
  assert value(105.2, 10, 3) == "105"
  assert value(9.9996, 10, 3) == "9.9996"          # (from below too)
  assert value(10.0, 10, 3) == "10"                # (equal: nothing to tell apart)
  assert console.shown_apart(12.345, 12.34, 3) == ("12.35", "12.34")    # (not '12.3' above it)
  assert 0.07 * 100 != 7 and value(7.02, 0.07 * 100, 3) == "7.02"       # (an inexact limit)
  assert console.shown_apart(25.04, 25, 1, "f") == ("25.04", "25.00")
  assert value(25.0, 24, 1, "f") == "25.0"
  assert console.shown_apart(0.5, 0.25) == ("0.5", "0.25")           # (6 digits by default)
  assert console.shown_apart(0.97, 0.96999999) == ("0.97", "0.96999999")


def test_a_swallowed_interrupt_is_not_a_success(monkeypatch, capsys):
  """Ctrl-C early in a run was raised inside JAX's gc callback, printed as 'Exception ignored'
  and dropped: the run finished, replaced its outputs and exited 0."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  ran = []

  def main(f):
    del f
    ran.append(True)
    monkeypatch.setattr(console, "_interrupted", True)   # as `_record_interrupt` does

  with pytest.raises(SystemExit) as e:
    common.run_in_process(main, lambda fv: flags.DEFINE_bool("x", False, "", flag_values=fv), [])
  assert ran and e.value.code == 130
  assert capsys.readouterr().err == "error: interrupted\n"


def test_the_interrupt_handler_records_and_raises(monkeypatch):
  from vitprune import console  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(console, "_interrupted", False)
  monkeypatch.setattr(console, "_terminated", False)
  with pytest.raises(KeyboardInterrupt):
    console._record_interrupt(2, None)
  assert console.interrupted()
  assert console.interrupt_exit() == ("interrupted", 130)
  with pytest.raises(KeyboardInterrupt):
    console.raise_if_interrupted()


def test_sigterm_is_recorded_as_an_interrupt_that_exits_143(monkeypatch):
  import signal  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(console, "_interrupted", False)
  monkeypatch.setattr(console, "_terminated", False)
  with pytest.raises(KeyboardInterrupt):      # the run's `finally` blocks clean up
    console._record_interrupt(signal.SIGTERM, None)
  assert console.interrupted() and console.interrupt_exit() == ("terminated", 143)
  console._record_interrupt(signal.SIGTERM, None)      # a second SIGTERM: the cleanup goes on
  with pytest.raises(KeyboardInterrupt):
    console._record_interrupt(signal.SIGINT, None)      # a Ctrl-C still stops it
  assert console.interrupt_exit() == ("terminated", 143)    # and does not hide the SIGTERM


@pytest.mark.parametrize("argv, installed", [
    (["python", "-m", "experiments.profile", "--tokens=65"], True),
    (["python", "-m", "benchmarks.floor_study"], True),
    (["python", "-m", "pytest", "-q", "tests"], False),      # an importer keeps its handler
    (["python", "-c", "import experiments"], False),
    (["python", "-m", "experiments_old.run"], False),       # another package
    (["python", "-m"], False),
])
def test_early_interrupt_exits_only_in_a_cli_process(monkeypatch, argv, installed):
  import signal  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  seen = []
  monkeypatch.setattr("sys.orig_argv", argv, raising=False)
  monkeypatch.setattr(signal, "signal", lambda sig, handler: seen.append((sig, handler)))
  monkeypatch.setattr(signal, "getsignal", lambda sig: (
      signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL))
  console.exit_on_early_interrupt("experiments", "benchmarks")
  assert seen == ([(signal.SIGINT, console._exit_now), (signal.SIGTERM, console._exit_now),
                   (signal.SIGHUP, console._exit_now)] if installed else [])


@pytest.mark.parametrize("sig, line, code", [("SIGINT", "error: interrupted", 130),
                                             ("SIGTERM", "error: terminated", 143),
                                             ("SIGHUP", "error: hung up", 129)])
def test_a_signal_during_a_clis_imports_ends_it_with_an_error_line(sig, line, code):
  """Before `setup_process` (the CLI still importing jax): nothing is written yet, so the
  process ends at once, but with the error line and status of a later signal (SIGTERM's
  default action ended it silently)."""
  body = ("sys.orig_argv = ['python', '-m', 'experiments.profile']\n"
          "console.exit_on_early_interrupt('experiments')\n"
          f"os.kill(os.getpid(), signal.{sig}); time.sleep(30); print('survived')")
  r = _console_script(body, "default")
  assert (r.returncode, r.stderr, r.stdout) == (code, line + "\n", "")


@pytest.mark.parametrize("entry", ["experiments", "edge"])
@pytest.mark.parametrize("sig, line, code", [("SIGINT", "error: interrupted", 130),
                                             ("SIGTERM", "error: terminated", 143)])
def test_a_signal_in_absls_start_up_is_one_line(entry, sig, line, code):
  """A signal after `setup_process`, while absl's `app.run` still starts up (it names the
  process, parses the flags), came before the run's own handler: a traceback, and exit 130 for
  a SIGTERM."""
  start = ("from experiments import common\n"
           "common.run(lambda f: print('ran'), lambda fv: None)" if entry == "experiments" else
           "import runpy; sys.argv = ['edge', 'run']\n"
           "runpy.run_module('vitprune.edge', run_name='__main__')")
  body = ("from absl import command_name\n"
          f"def hit(): os.kill(os.getpid(), signal.{sig}); time.sleep(30)\n"
          "command_name.make_process_name_useful = hit\n" + start)
  r = _console_script(body, "default")
  assert (r.returncode, r.stderr, r.stdout) == (code, line + "\n", "")


def test_sigterm_during_the_imports_of_a_background_job_is_one_line():
  """A shell's background job (`cmd &`) starts with SIGINT ignored, which skipped the early
  SIGTERM handler too: exit -15, no line."""
  body = ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
          "sys.orig_argv = ['python', '-m', 'experiments.profile']\n"
          "console.exit_on_early_interrupt('experiments')\n"
          "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)")
  r = _console_script(body, "default")
  assert (r.returncode, r.stderr) == (143, "error: terminated\n")


def test_a_second_signal_while_an_interrupted_run_exits_is_ignored():
  """SIGINT, then SIGTERM during the cleanup: two error lines, and the cleanup cut short."""
  body = ("from experiments import common\n"
          "from vitprune import atomic\n"
          "def slow_cleanup(): os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.5); "
          "print('cleaned')\n"
          "atomic.remove_exit_paths = slow_cleanup\n"
          "def main(f): os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"
          "sys.argv = ['prog']\n"
          "common.run(main, lambda fv: None)")
  r = _console_script(body, "default")
  assert (r.returncode, r.stderr, r.stdout) == (130, "error: interrupted\n", "cleaned\n")


def test_the_board_cli_exits_early_too():
  """`python -m vitprune.edge` (the board CLI, no experiments package) got no early handler: a
  SIGTERM during its imports ended it silently."""
  body = ("sys.orig_argv = ['python', '-m', 'vitprune.edge', 'run']\n"
          "import vitprune.edge\n"
          "print([signal.getsignal(s) is console._exit_now for s in (signal.SIGINT, "
          "signal.SIGTERM)])")
  r = _console_script(body, "default")
  assert (r.returncode, r.stdout.strip()) == (0, "[True, True]"), r


def test_setup_process_replaces_the_early_handlers():
  body = ("sys.orig_argv = ['python', '-m', 'experiments.profile']\n"
          "console.exit_on_early_interrupt('experiments')\n"
          "console.setup_process()\n"
          "print(all(signal.getsignal(s) is console._record_interrupt "
          "for s in (signal.SIGINT, signal.SIGTERM)))")
  r = _console_script(body, "default")
  assert (r.returncode, r.stdout.strip()) == (0, "True"), r


def _console_script(body: str, mode: str):
  """Runs `body` in a fresh interpreter with `vitprune.console` imported and `mode` as
  sys.argv[1] -> the CompletedProcess (signal handlers are per process)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = f"import os, signal, sys, time, weakref; sys.path.insert(0, {root!r})\n" \
           "from vitprune import console\n" + body
  return subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                        timeout=60)


def test_an_ignored_sigint_stays_ignored():
  """A shell's background job (`cmd &`) starts with SIGINT ignored; the CLI's handler made a
  Ctrl-C meant for the foreground kill it. Python's default handler is replaced, as before."""
  body = ("if sys.argv[1] == 'ignored': signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
          "console.setup_process()\n"
          "print(signal.getsignal(signal.SIGINT) is console._record_interrupt, "
          "signal.getsignal(signal.SIGINT) is signal.SIG_IGN)")
  for mode, want in (("default", "True False"), ("ignored", "False True")):
    r = _console_script(body, mode)
    assert (r.returncode, r.stdout.strip()) == (0, want), (mode, r)


def test_sigterm_is_handled_only_where_it_had_its_default_action():
  """`setup_process` takes SIGTERM over from its default action (kill at once, no cleanup), but
  leaves an ignored SIGTERM or a handler of the embedding program alone."""
  body = ("mine = lambda *a: None\n"
          "if sys.argv[1] == 'default': signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
          "if sys.argv[1] == 'ignored': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "if sys.argv[1] == 'own': signal.signal(signal.SIGTERM, mine)\n"
          "console.setup_process()\n"
          "h = signal.getsignal(signal.SIGTERM)\n"
          "print(h is console._record_interrupt, h is signal.SIG_IGN, h is mine)")
  for mode, want in (("default", "True False False"), ("ignored", "False True False"),
                     ("own", "False False True")):
    r = _console_script(body, mode)
    assert (r.returncode, r.stdout.strip()) == (0, want), (mode, r)


def test_an_interrupt_inside_a_callback_prints_no_traceback():
  """A signal handled inside a weakref finaliser (or JAX's garbage-collection hook) raised there,
  and Python printed "Exception ignored in ..." and a traceback before the error line; it is
  recorded (so the run still stops), and `setup_process`'s hook says nothing of it."""
  body = ("sys.unraisablehook = lambda u: print('mine:', u.exc_type.__name__)\n"
          "if sys.argv[1] == 'setup': console.setup_process()\n"
          "else: signal.signal(signal.SIGTERM, console._record_interrupt)\n"
          "class A: pass\n"
          "a = A()\n"
          "weakref.finalize(a, lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
          "del a\n"
          "print(console.interrupted(), console.interrupt_exit())\n"
          "weakref.finalize(A(), lambda: 1 / 0)\n")
  for mode in ("setup", "plain"):
    r = _console_script(body, mode)
    want = ("" if mode == "setup" else "mine: KeyboardInterrupt\n") + \
        "True ('terminated', 143)\nmine: ZeroDivisionError\n"   # other errors: the hook it replaced
    assert (r.returncode, r.stdout, r.stderr) == (0, want, ""), (mode, r)


def test_a_finished_run_ignores_late_signals():
  """Python's finalisation restores SIGINT / SIGTERM's default actions, so a signal in a
  finished run's last moments killed it (exit 130/143, no error line, outputs already written);
  `finish_quietly` ignores them from then on, and leaves a caller's own handler alone."""
  body = ("console.setup_process()\n"
          "mine = lambda *a: print('mine')\n"
          "if sys.argv[1] == 'own': signal.signal(signal.SIGTERM, mine)\n"
          "console.finish_quietly()\n"
          "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,\n"
          "      signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n"
          "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT)\n"
          "time.sleep(0.2); print('done', console.interrupted())\n")
  for mode, want in (("default", "True True\ndone False\n"),
                     ("own", "True False\nmine\ndone False\n")):
    r = _console_script(body, mode)
    assert (r.returncode, r.stdout, r.stderr) == (0, want, ""), (mode, r)


def test_a_cli_process_finishes_quietly_and_a_test_process_does_not(monkeypatch):
  """`run` (whole_process) ignores late signals once main returned, before checking for a
  swallowed interrupt (a signal between the two would still fail a finished run);
  `run_in_process` (tests, library callers) leaves the process's handlers alone."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(console, "finish_quietly", lambda: calls.append("finish"))
  monkeypatch.setattr(console, "raise_if_interrupted", lambda: calls.append("check"))

  def define(fv):
    flags.DEFINE_string("name", "x", "A flag.", flag_values=fv)

  fv = common.parse(define, [])
  common._run_parsed(lambda f: calls.append("main"), fv, ["prog"], whole_process=True)
  assert calls == ["main", "finish", "check"]
  calls.clear()
  common.run_in_process(lambda f: calls.append("main"), define, [])
  assert calls == ["main", "check"]


def test_success_lines_escape_control_characters_of_paths(tmp_path, capsys):
  """A path holding a newline or a terminal escape split the `wrote ...` line in two, or
  recoloured the terminal (error lines were already one line)."""
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  out = tmp_path / "a\x1b[31mb\nc"
  common.run_in_process(estimate_cli.main, estimate_cli.define_flags,
                        ["--tokens=65,33", "--num_images=10", f"--out_dir={out}"])
  last = capsys.readouterr().out.splitlines()[-1]
  assert last.startswith(f"wrote {tmp_path}/a\\x1b[31mb\\nc/vit_digits_random_embed_"), last
  assert common.shown("x\ty") == "x\\ty" and common.shown("é ü") == "é ü"


def test_only_a_folder_published_whole_needs_room_for_its_hidden_sibling(tmp_path, monkeypatch):
  """The main job publishes its --out_dir through `.NAME.tmp-PID-...` beside it: a ~245-byte
  name failed after all the work. Folders only written into keep any name the system allows."""
  long = tmp_path / ("b" * 240)
  long.mkdir()
  common.check_output_dir(str(long))                         # solve, estimate, caches: fine
  with pytest.raises(ValueError, match=r"--out_dir: the name bbbbbbbbbbbbbbbbbbbbbbbb\.\.\. is "
                     r"240 bytes; at most \d+ fit"):
    common.check_output_dir(str(long), published=True)
  monkeypatch.chdir(long)
  with pytest.raises(ValueError, match="is 240 bytes"):     # '.' names that folder too
    common.check_output_dir(".", published=True)
  with pytest.raises(ValueError, match="--out: the name"):
    common.check_new_dir(str(tmp_path / ("c" * 240)), "out")


def test_a_folder_published_whole_needs_a_writable_folder_above_it(tmp_path, monkeypatch):
  """Probe: the main job's --out_dir of an earlier run, writable, under a folder nothing can be
  created in (chattr +i; another owner's): every stage ran, then the publish failed naming its
  hidden temporary. Refused up front now, naming the flag and the folder."""
  out = tmp_path / "run"
  out.mkdir()
  real = atomic.tempfile.mkstemp

  def mkstemp(*a, dir=None, **kw):  # pylint: disable=redefined-builtin
    if os.path.abspath(dir) == str(tmp_path):
      raise PermissionError(1, "Operation not permitted")
    return real(*a, dir=dir, **kw)

  monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
  common.check_output_dir(str(out))                  # (files written into it: fine)
  with pytest.raises(PermissionError, match=rf"^--out_dir={out}: cannot write in {tmp_path} "
                                            r"\(Operation not permitted\)$"):
    common.check_output_dir(str(out), published=True)


def test_a_hang_up_with_stderr_gone_still_exits_129():
  """A closed terminal or ssh session leaves stderr unwritable: writing the error line raised
  (a broken pipe), so the run skipped its fast exit and ended 1."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = (f"import os, signal, sys, time; sys.path.insert(0, {root!r})\n"
            "from experiments import common\n"
            "sys.argv = ['prog']\n"
            "def main(f): time.sleep(1); os.kill(os.getpid(), signal.SIGHUP); time.sleep(30)\n"
            "common.run(main, lambda fv: None)")
  p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
  p.stderr.close()                                 # the reader is gone
  assert p.wait(timeout=60) == 129


def test_weights_trained_on_another_digits_split_are_not_scored_on_the_bundled_one(tmp_path,
                                                                                    capsys):
  """`train_digits --split_seed=1`, then `estimate --data=digits`: 288 of the 359 test digits
  were training images, and the inflated accuracy came with no warning."""
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  from vitprune.checkpoint import save_weights  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  for seed in (0, 1):
    save_weights(str(tmp_path / f"w{seed}"), cfg, init_params(cfg, 0), meta={
        "dataset": "sklearn_digits", "split": {"seed": seed, "test_fraction": 0.2}})
  # (each returns the split the weights were trained on: estimate's note on --split=train)
  assert common.check_digits_split(str(tmp_path / "w0"), "digits") == (0, 0.2)  # the bundled
  assert common.check_digits_split(str(tmp_path / "w1"), str(tmp_path)) == (1, 0.2)  # a folder
  assert common.check_digits_split(common.EMBEDDED_WEIGHTS, "digits") == (0, 0.2)
  assert common.check_digits_split(str(tmp_path / "w1"), None) is None          # no data
  with pytest.raises(SystemExit) as e:
    common.run_in_process(estimate_cli.main, estimate_cli.define_flags, [
        f"--weights={tmp_path / 'w1'}", "--tokens=65", "--num_images=10",
        f"--out_dir={tmp_path / 'e'}"])
  assert e.value.code == 1 and not (tmp_path / "e").exists()
  with pytest.raises(ValueError, match=r"w1 were trained on the digits split of seed 1 \(test "
                     r"fraction 0.2\), but --data=digits is the test split of seed 0"):
    common.check_digits_split(str(tmp_path / "w1"), "digits")
  # prune has no --data: its refusal named one (a probe then got "Unknown command line flag")
  from experiments import prune  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    common.run_in_process(prune.main, prune.define_flags, [f"--weights={tmp_path / 'w1'}"])
  err = capsys.readouterr().err
  assert e.value.code == 1 and "--data" not in err
  assert "but the bundled digits (prune without --images) is the test split of seed 0" in err


def _indices_by_name(root: str) -> set:
  """The digits' indices a `digits_images` folder's file names hold (`<class>/<idx>.png`)."""
  return {int(os.path.basename(p)[:4]) for p in glob.glob(os.path.join(root, "*", "*.png"))}


def test_a_digits_folder_holding_training_images_of_the_weights_is_refused(tmp_path, capsys):
  """`digits_images` folders took no split check: weights of `--split_seed=1` scored on the
  bundled test split written as a folder (288 of 359 their training images), or the bundled
  model on a `--split=train` folder, reported inflated accuracies with no warning."""
  from experiments import digits_images  # pylint: disable=g-import-not-at-top
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  from vitprune.checkpoint import save_weights  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("vit_digits")
  w1 = save_weights(str(tmp_path / "w1"), cfg, init_params(cfg, 0), meta={
      "dataset": "sklearn_digits", "split": {"seed": 1, "test_fraction": 0.2}})
  folders = {}
  for name, argv in (("test0", []), ("test1", ["--split_seed=1"]), ("train0", ["--split=train",
                                                                            "--limit=30"])):
    folders[name] = str(tmp_path / name)
    common.run_in_process(digits_images.main, digits_images.define_flags,
                          [f"--out={folders[name]}"] + argv)
  assert capsys.readouterr().out.splitlines()[1] == (f"wrote 359 digits (test split of seed 1) "
                                                     f"to {folders['test1']}")
  assert _indices_by_name(folders["test1"]) == set(
      digits.digits_split(1)[1].tolist())
  common.check_digits_split(w1, folders["test1"])                  # its own test split
  common.check_digits_split(common.EMBEDDED_WEIGHTS, folders["test0"])
  leaked = len(_indices_by_name(folders["test0"]) & set(
      digits.digits_split(1)[0].tolist()))
  assert leaked > 250
  with pytest.raises(ValueError, match=re.escape(
      f"{leaked} of the 359 digits in {folders['test0']} are training images of --weights={w1} "
      "(digits split of seed 1, test fraction 0.2), so every score on them would be inflated: "
      "write that split's test images (digits_images --split=test --split_seed=1)")):
    common.check_digits_split(w1, folders["test0"])
  with pytest.raises(ValueError, match=r"^30 of the 30 digits in .*train0 are training images "
                                       r"of the embedded weights .*weights/vit_digits \(digits "
                                       r"split of seed 0"):
    common.check_digits_split(common.EMBEDDED_WEIGHTS, folders["train0"])
  # A copy without the hidden marker (`cp -r test0/* copy`) was scored: its digits are found by
  # content (an image changed is not a digit; one moved to another class folder still is).
  import shutil  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "copy"
  shutil.copytree(folders["test0"], copy)
  os.remove(copy / digits.DIGITS_MARKER)
  train1 = sorted(_indices_by_name(folders["test0"]) & set(
      digits.digits_split(1)[0].tolist()))
  first, second = (f"{i:04d}.png" for i in train1[:2])
  label = digits.DIGITS_CLASSES[digits.load_digits_arrays()[1][train1[0]]]
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(copy / label / first)    # not that digit
  other = digits.DIGITS_CLASSES[digits.load_digits_arrays()[1][train1[1]]]
  os.rename(copy / other / second, copy / ("1" if other != "1" else "2") / second)
  assert digits.digits_copied_into(str(copy)) == _indices_by_name(
      folders["test0"]) - {train1[0]}
  with pytest.raises(ValueError, match=f"^{leaked - 1} of the 358 digits in {copy} are "
                                       "training images of --weights="):
    common.check_digits_split(w1, str(copy))
  # One folder deeper (ImageFolder labels by the top folder: `3/sub/0062.png` is a 3), or a class
  # folder that is a link, is the same copy (nested, it was missed and scored 1.0); a loop of
  # links still ends the walk.
  nested = tmp_path / "nested"
  for cls in os.listdir(folders["test0"]):
    if os.path.isdir(os.path.join(folders["test0"], cls)):
      shutil.copytree(os.path.join(folders["test0"], cls), nested / cls / "sub")
  os.symlink(nested, nested / "0" / "sub" / "loop")
  os.rename(nested / "9", tmp_path / "nine")
  os.symlink(tmp_path / "nine", nested / "9")
  assert digits.digits_copied_into(str(nested)) == _indices_by_name(folders["test0"])
  hidden = tmp_path / "hidden"         # ImageFolder reads no hidden folder: nor does the check
  shutil.copytree(os.path.join(folders["test0"], "3"), hidden / "3" / ".trash")
  assert digits.digits_copied_into(str(hidden)) == set()
  # A flat copy (`cp train0/*/*.png flat/`, scored by agreement) was missed: ImageFolder reads
  # the files directly in it, and they are the digits all the same.
  flat = tmp_path / "flat"
  flat.mkdir()
  pngs = sorted(glob.glob(os.path.join(folders["train0"], "*", "*.png")))
  for png in pngs:
    shutil.copy(png, flat)
  os.mkfifo(flat / "0005.png")                 # never opened (it blocked the check for ever)
  assert digits.digits_copied_into(str(flat)) == _indices_by_name(folders["train0"])
  with pytest.raises(ValueError, match=r"^30 of the 30 digits in .*flat are training images "
                                       r"of the embedded weights"):
    common.check_digits_split(common.EMBEDDED_WEIGHTS, str(flat))
  # Renamed, or saved in another lossless format or as grey RGB, they are the same digits (the
  # guard matched `<idx>.png` names only: `a.png` was scored); a hidden file is not read.
  renamed = tmp_path / "renamed"
  renamed.mkdir()
  for k, png in enumerate(pngs):
    with Image.open(png) as img:
      if k % 3 == 0:
        img.save(renamed / f"img_{k}.png")
      elif k % 3 == 1:
        img.save(renamed / f"img_{k}.BMP", format="BMP")
      else:
        img.convert("RGB").save(renamed / f"img_{k}.tiff", format="TIFF")
  shutil.move(str(renamed / "img_0.png"), renamed / ".img_0.png")
  first_index = int(os.path.basename(pngs[0])[:4])                     # (the hidden one)
  assert digits.digits_copied_into(str(renamed)) == _indices_by_name(
      folders["train0"]) - {first_index}
  with pytest.raises(ValueError, match=r"^29 of the 29 digits in .*renamed are training images"):
    common.check_digits_split(common.EMBEDDED_WEIGHTS, str(renamed))
  # Beside class folders the root's files are not read (ImageFolder warns): not counted.
  beside = tmp_path / "beside"
  shutil.copytree(folders["test0"], beside)
  os.remove(beside / digits.DIGITS_MARKER)
  for png in pngs:
    shutil.copy(png, beside)
  assert digits.digits_copied_into(str(beside)) == _indices_by_name(folders["test0"])
  common.check_digits_split(common.EMBEDDED_WEIGHTS, str(beside))
  with pytest.raises(SystemExit) as e:
    common.run_in_process(estimate_cli.main, estimate_cli.define_flags, [
        f"--weights={w1}", f"--data={folders['test0']}", "--tokens=65",
        f"--out_dir={tmp_path / 'e'}"])
  assert e.value.code == 1 and not (tmp_path / "e").exists()
  assert "are training images of --weights=" in capsys.readouterr().err


def test_training_digits_are_found_in_class_folders_of_any_name(tmp_path):
  """Weights that record no class names label folders by their sorted position, so `c0`..`c9`
  are the digits 0-9 to them: training digits filed there passed the guard, which read only
  folders named `0`..`9` and only a digit in its own label's folder."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  images, labels = digits.load_digits_arrays()
  train = digits.digits_split(0)[0]
  named = tmp_path / "named"
  put = set()
  for c in range(10):
    os.makedirs(named / f"c{c}")
    for i in [int(j) for j in train if labels[j] == c][:3]:
      Image.fromarray(images[i]).save(named / f"c{c}" / f"{i}.png")
      put.add(i)
  misfiled = int(next(j for j in train if labels[j] == 5 and int(j) not in put))
  Image.fromarray(images[misfiled]).save(named / "c3" / "five.png")     # a 5 among the 3s
  assert digits.digits_copied_into(str(named)) == put | {misfiled}
  with pytest.raises(ValueError, match=r"^31 of the 31 digits in .*named are training images "
                                       r"of the embedded weights"):
    common.check_digits_split(common.EMBEDDED_WEIGHTS, str(named))


def test_training_digits_added_to_a_digits_images_folder_are_found_by_their_pixels(tmp_path):
  """A `digits_images` folder (marker and inventory kept) was judged by its file names: a
  training digit copied in as `3/extra.png`, or over a test file, scored 1.0 (41/41); a grey
  training digit saved as LA (grey + alpha) was not recognised in any folder."""
  import shutil  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from vitprune import digits  # pylint: disable=g-import-not-at-top
  test = digits.write_digits_imagefolder(str(tmp_path / "test"), "test", limit=40)
  train_index = int(digits.digits_split(0)[0][0])
  label = digits.DIGITS_CLASSES[digits.load_digits_arrays()[1][train_index]]
  train_digit = Image.fromarray(digits.load_digits_arrays()[0][train_index])
  common.check_digits_split(common.EMBEDDED_WEIGHTS, test)          # its own test split: fine
  added = tmp_path / "added"
  shutil.copytree(test, added)                                      # (marker and inventory)
  train_digit.save(added / label / "extra.png")
  over = tmp_path / "over"
  shutil.copytree(test, over)
  train_digit.save(over / label / sorted(os.listdir(over / label))[0])
  grey_alpha = tmp_path / "la"
  shutil.copytree(test, grey_alpha)
  train_digit.convert("LA").save(grey_alpha / label / "extra.png")
  padded = tmp_path / "padded"          # 80 KiB of text chunks: past the guard's size cap
  shutil.copytree(test, padded)
  from PIL import PngImagePlugin  # pylint: disable=g-import-not-at-top
  info = PngImagePlugin.PngInfo()
  info.add_text("comment", os.urandom(60_000).hex()[:80_000])
  train_digit.save(padded / label / "extra.png", pnginfo=info)
  assert os.path.getsize(padded / label / "extra.png") > 1 << 16
  for folder, found in ((added, 41), (over, 40), (grey_alpha, 41), (padded, 41)):
    assert train_index in digits.digits_copied_into(str(folder))
    with pytest.raises(ValueError, match=re.escape(
        f"1 of the {found} digits in {folder} is a training image of the embedded weights")):
      common.check_digits_split(common.EMBEDDED_WEIGHTS, str(folder))
  # A colour image whose red plane is a digit's is not that digit (green or blue differ).
  px = np.asarray(digits.load_digits_arrays()[0][train_index])
  for other in (1, 2):
    tinted = tmp_path / f"tinted{other}"
    shutil.copytree(test, tinted)
    rgb = np.stack([px] * 3, axis=-1)
    rgb[..., other] = 255 - px
    Image.fromarray(rgb).save(tinted / label / "extra.png")
    assert train_index not in digits.digits_copied_into(str(tinted))
    common.check_digits_split(common.EMBEDDED_WEIGHTS, str(tinted))


def test_an_explicit_model_of_the_default_name_must_match_the_weights(tmp_path):
  """`--model=vit_digits --weights=<test_tiny_vit weights>` built a test_tiny_vit kit: the name
  check skipped the default model's name even when it was given."""
  from experiments import prune  # pylint: disable=g-import-not-at-top
  from vitprune.checkpoint import save_weights  # pylint: disable=g-import-not-at-top
  from vitprune.model import init_params  # pylint: disable=g-import-not-at-top
  from vitprune.registry import get_config  # pylint: disable=g-import-not-at-top
  cfg = get_config("test_tiny_vit")
  weights = save_weights(str(tmp_path / "w"), cfg, init_params(cfg, 0))
  assert common.model_config(None, weights).name == "test_tiny_vit"
  with pytest.raises(ValueError, match=f"--model='vit_digits' but {weights} holds "
                     "'test_tiny_vit'"):
    common.model_config("vit_digits", weights)
  fv = common.parse(prune.define_flags, [f"--weights={weights}"])      # the flag's default
  assert common.given_model(fv) is None and fv.model == "vit_digits"
  assert common.given_model(common.parse(prune.define_flags, ["--model=vit_digits"])) == (
      "vit_digits")


def test_a_data_word_that_is_also_a_folder_here_is_refused(tmp_path, monkeypatch, capsys):
  """`--data=digits` with a folder ./digits (say, `digits_images --out=digits`) evaluated the
  bundled digits, not the folder (`prune --images=digits` reads the folder); benchmark
  `--data=none` with a folder ./none ran latency only."""
  from experiments import benchmark, profile  # pylint: disable=g-import-not-at-top
  from experiments import estimate as estimate_cli  # pylint: disable=g-import-not-at-top
  from experiments import digits_images, prune  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  common.run_in_process(digits_images.main, digits_images.define_flags,
                        ["--out=digits", "--split=train", "--limit=10"])
  (tmp_path / "None").mkdir()
  fv = flags.FlagValues()
  estimate_cli.define_flags(fv)
  for argv in ([], ["--data=./digits"]):
    fv.unparse_flags()
    fv(["prog", *argv])
    common.check_data_flag(fv)                     # (left out: the bundled digits, as always)
  fv.unparse_flags()
  fv(["prog", "--data=none"])                      # (not a word of estimate's: a folder ./none)
  with pytest.raises(ValueError, match="^--data=none does not exist: give a folder of images or "
                     "'digits' for the bundled digits$"):
    common.check_data_flag(fv)
  digits = ("--data=digits means the bundled digits, and ./digits is also a folder here: pass "
            "--data=./digits for the folder, or leave --data out for the bundled digits")
  for cli, argv, line in (
      (estimate_cli, ["--tokens=65", "--data=digits"], digits),
      (profile, ["--mode=pipeline", "--data=digits"], digits),
      (benchmark, ["--data=None"], "--data=None means no data (latency only), and ./None is also "
                                   "a folder here: pass --data=./None for the folder")):
    with pytest.raises(SystemExit) as e:
      common.run_in_process(cli.main, cli.define_flags, argv)
    assert e.value.code == 1 and capsys.readouterr().err.endswith(f"error: {line}\n")
  with pytest.raises(SystemExit):       # the folder, checked as one (was: as the bundled set)
    common.run_in_process(prune.main, prune.define_flags, ["--images=digits"])
  assert "10 of the 10 digits in" in capsys.readouterr().err
  assert sorted(os.listdir(tmp_path)) == ["None", "digits"]


@pytest.mark.parametrize("sig, code, said", [("SIGTERM", 143, "terminated"),
                                             ("SIGINT", 130, "interrupted")])
def test_a_failure_while_an_interrupt_is_held_exits_as_interrupted(monkeypatch, capsys, sig,
                                                                   code, said):
  """A signal held during a publish, then the publish failed (a full disk): the run exited 1
  with the failure alone, as if nobody had asked it to stop."""
  import signal  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  for name, value in (("_interrupted", False), ("_terminated", False), ("_held", 0),
                      ("_written", []), ("_is_cli", True)):
    monkeypatch.setattr(console, name, value)

  def main(_):
    with console.interrupts_held():
      console._record_interrupt(getattr(signal, sig), None)  # pylint: disable=protected-access
      raise OSError(28, "No space left on device while writing /out")

  with pytest.raises(SystemExit) as e:
    common.run_in_process(main, lambda fv: None, [])
  assert e.value.code == code
  assert capsys.readouterr().err == ("error: [Errno 28] No space left on device while writing "
                                     f"/out ({said})\n")


def test_an_output_inside_the_data_folder_is_refused(tmp_path, monkeypatch):
  """The main job's plots, written inside a class folder of --data, were read back as images of
  that class by the next run with the same flags: its accuracy fell without a word."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  flags.DEFINE_string("data", "digits", "", flag_values=fv)
  fv(["prog"])
  data = tmp_path / "mydata"
  (data / "3").mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  for value, out, refused in (("digits", "mydata/3/run", False),   # a data word: no folder
                              (str(data), "elsewhere", False),
                              (str(data), str(data / "3" / "run"), True),
                              ("mydata/", "mydata", True),           # the folder itself
                              (str(data), str(tmp_path / "mydata2"), False)):   # a prefix only
    fv.data = value
    if refused:
      with pytest.raises(ValueError, match=f"^--out_dir={out} is inside --data={value}: what "
                         "it writes there would be read with the images next time"):
        common.check_outside_data(out, "out_dir", fv)
    else:
      common.check_outside_data(out, "out_dir", fv)
  (tmp_path / "link").symlink_to(data / "3")
  with pytest.raises(ValueError, match="is inside --data"):     # through a link too
    common.check_outside_data(str(tmp_path / "link" / "run"), "out_dir", fv)
  # ... and where a class folder linked from elsewhere points (a benchmark's plot written
  # there was read as a digit 5, a probe)
  store = tmp_path / "store5"
  store.mkdir()
  (data / "5").symlink_to(store)
  fv.data = str(data)
  with pytest.raises(ValueError, match=f"^--out_dir={store} is inside --data={data}"):
    common.check_outside_data(str(store), "out_dir", fv)


def test_results_of_another_command_are_replaced_with_a_note(tmp_path, capsys):
  """A benchmark's --out JSON of other settings (other methods, other sizes) was replaced by the
  next run without a word."""
  out = str(tmp_path / "r.json")
  common.write_result(out, {"format": "f", "command": "python -m b --methods=pomt"}, "f")
  common.write_result(out, {"format": "f", "command": "python -m b --methods=pomt"}, "f")
  assert capsys.readouterr().out == ""                     # a rerun of the same command
  common.write_result(out, {"format": "f", "command": "python -m b --methods=topk"}, "f")
  assert capsys.readouterr().out == (f"note: replacing {out}, the results of: python -m b "
                                     "--methods=pomt\n")
  with open(out) as f:
    assert json.load(f)["command"] == "python -m b --methods=topk"


def test_results_whose_out_was_taken_meanwhile_are_kept_beside_it(tmp_path):
  """A file someone made at --out while a benchmark ran is not replaced, but the results were
  then lost (printed only as a table): they are written beside it, named in the error."""
  out = tmp_path / "r.json"
  out.write_text('{"mine": 1}')
  doc = {"format": "f", "command": "python -m b", "rows": [1, 2]}
  with pytest.raises(atomic.ForeignOutputError) as e:
    common.write_result(str(out), doc, "f")
  (kept,) = [p for p in tmp_path.iterdir() if p != out]
  assert re.fullmatch(r"r\.kept-[0-9a-f]{8}\.json", kept.name)
  assert str(e.value).startswith(f"refusing to replace {out}") and str(e.value).endswith(
      f"; the results are kept in {kept}")
  assert json.loads(kept.read_text()) == doc and out.read_text() == '{"mine": 1}'
  # An output named without an extension keeps a .json (mutation audit: unpinned).
  bare = tmp_path / "results"
  bare.write_text('{"mine": 2}')
  with pytest.raises(atomic.ForeignOutputError, match=r"results are kept in .*/results\.kept-"
                                                      r"[0-9a-f]{8}\.json$"):
    common.write_result(str(bare), doc, "f")


def test_results_whose_folder_became_a_file_meanwhile_are_kept_above_it(tmp_path):
  """--out's folder replaced by a file during a floor study: 'error: [Errno 17] File exists'
  after the table, and no results anywhere (a probe)."""
  sub = tmp_path / "sub"
  sub.write_text("not a folder")
  doc = {"format": "f", "command": "python -m b", "rows": [1, 2]}
  with pytest.raises(OSError) as e:
    common.write_result(str(sub / "r.json"), doc, "f")
  (kept,) = [p for p in tmp_path.iterdir() if p != sub]
  assert re.fullmatch(r"r\.kept-[0-9a-f]{8}\.json", kept.name)
  assert str(e.value).startswith(f"cannot write {sub / 'r.json'}: its folder {sub} is no "
                                 "longer a folder (") and str(e.value).endswith(
                                     f"; the results are kept in {kept}")
  assert json.loads(kept.read_text()) == doc and sub.read_text() == "not a folder"


# ---------------------------------------------------------------- mutation audit (console, common)


def test_the_out_of_memory_line_is_stripped_and_a_bare_key_error_named():
  """The RESOURCE_EXHAUSTED line is quoted without its indentation; a KeyError without arguments
  is named (its text was read from args[0]: an IndexError)."""
  from vitprune import console  # pylint: disable=g-import-not-at-top
  error = RuntimeError("XlaRuntimeError:\n    RESOURCE_EXHAUSTED: Out of memory   \nmore")
  assert console.resource_exhausted(error) == "RESOURCE_EXHAUSTED: Out of memory"
  assert console.resource_exhausted(RuntimeError("INTERNAL: boom")) is None
  assert common.one_line(KeyError()) == "KeyError"


def test_setup_process_prints_undecodable_bytes_escaped_and_may_run_twice():
  """A path's undecodable byte (`\\udcff`) printed escaped, not an UnicodeEncodeError after the
  work; a second `setup_process` kept the hook it replaced (not itself: a recursion)."""
  body = ("sys.unraisablehook = lambda u: print('mine:', u.exc_type.__name__)\n"
          "console.setup_process(); console.setup_process()\n"
          "print('a\\udcffb', flush=True)\n"
          "class A: pass\n"
          "weakref.finalize(A(), lambda: 1 / 0)\n")
  r = _console_script(body, "default")
  assert (r.returncode, r.stdout, r.stderr) == (0, "a\\udcffb\nmine: ZeroDivisionError\n", ""), r


def test_only_a_recorded_interrupt_inside_a_callback_is_kept_quiet(monkeypatch):
  """A KeyboardInterrupt the handler did not record (none was recorded) is not dropped silently:
  it goes to the hook `setup_process` replaced."""
  import types  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  seen = []
  monkeypatch.setattr(console, "_previous_unraisablehook", seen.append)
  unraisable = types.SimpleNamespace(exc_value=KeyboardInterrupt())
  monkeypatch.setattr(console, "_interrupted", False)
  console._quiet_recorded_interrupt(unraisable)  # pylint: disable=protected-access
  assert seen == [unraisable]
  monkeypatch.setattr(console, "_interrupted", True)
  console._quiet_recorded_interrupt(unraisable)  # pylint: disable=protected-access
  other = types.SimpleNamespace(exc_value=ZeroDivisionError())
  console._quiet_recorded_interrupt(other)  # pylint: disable=protected-access
  assert seen == [unraisable, other]


def test_finish_quietly_sets_handlers_only_from_the_main_thread(monkeypatch):
  """Only the main thread may set a signal handler (elsewhere: ValueError)."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(signal, "getsignal", lambda sig: console._record_interrupt)
  monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
  thread = threading.Thread(target=console.finish_quietly)
  thread.start()
  thread.join()
  assert calls == []
  console.finish_quietly()
  assert calls == [(signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_IGN),
                   (signal.SIGHUP, signal.SIG_IGN)]


def test_nested_holds_raise_the_interrupt_once_the_outermost_is_left(monkeypatch):
  from vitprune import console  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(console, "_interrupted", True)
  monkeypatch.setattr(console, "_held", 0)
  reached = []
  with pytest.raises(KeyboardInterrupt):
    with console.interrupts_held():
      with console.interrupts_held():
        pass
      reached.append("inner left")             # (the outer publish is still under way)
  assert reached == ["inner left"] and console._held == 0  # pylint: disable=protected-access


def test_raise_held_joins_a_failure_to_an_interrupt_only_outside_holds(monkeypatch):
  from vitprune import console  # pylint: disable=g-import-not-at-top

  def raised(failure):
    try:
      console.raise_held(failure)
    except KeyboardInterrupt as e:             # (not let through: it would stop pytest)
      return e
    return None

  monkeypatch.setattr(console, "_interrupted", True)
  failure = OSError(28, "No space left on device")
  monkeypatch.setattr(console, "_held", 1)
  assert raised(failure) is None                     # still held: the outer hold raises it
  monkeypatch.setattr(console, "_held", 0)
  assert raised(KeyboardInterrupt()) is None         # an interrupt itself: it goes on
  e = raised(failure)
  assert type(e) is console.InterruptedFailure and console.failure_of(e) is failure
  assert e.__cause__ is failure
  monkeypatch.setattr(console, "_interrupted", False)
  assert raised(failure) is None                     # no interrupt: the caller raises it


def test_an_interrupt_names_only_published_outputs_still_there(tmp_path, monkeypatch):
  """An output written and then removed again (staged in a folder published whole) is not
  named as written."""
  from vitprune import console  # pylint: disable=g-import-not-at-top
  there = tmp_path / "kept.json"
  there.write_text("{}")
  for name, value in (("_interrupted", True), ("_terminated", False),
                      ("_written", [str(there), str(tmp_path / "gone.json")])):
    monkeypatch.setattr(console, name, value)
  assert console.interrupt_exit() == (f"interrupted (after writing {there})", 130)


def test_an_early_stop_signal_keeps_an_ignored_or_own_handler(monkeypatch):
  """nohup's ignored SIGHUP (or a caller's own SIGTERM handler) is left alone before
  `setup_process`, as after it."""
  import signal  # pylint: disable=g-import-not-at-top
  from vitprune import console  # pylint: disable=g-import-not-at-top
  seen = []
  handlers = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: print,
              signal.SIGHUP: signal.SIG_IGN}
  monkeypatch.setattr("sys.orig_argv", ["python", "-m", "experiments.profile"], raising=False)
  monkeypatch.setattr(signal, "signal", lambda sig, handler: seen.append((sig, handler)))
  monkeypatch.setattr(signal, "getsignal", handlers.get)
  console.exit_on_early_interrupt("experiments")
  assert seen == [(signal.SIGINT, console._exit_now)]  # pylint: disable=protected-access


def test_quiet_logging_keeps_a_given_verbosity(monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  set_to = []
  monkeypatch.setattr(common.logging, "set_verbosity", set_to.append)
  fv = flags.FlagValues()
  flags.DEFINE_integer("verbosity", -1, "", flag_values=fv)
  fv(["prog", "--verbosity=1"])
  common.quiet_logging(fv)
  assert set_to == []
  fv.unparse_flags()
  fv(["prog"])
  common.quiet_logging(fv)
  common.quiet_logging(flags.FlagValues())         # (no --verbosity at all: run_in_process)
  assert set_to == [common.logging.WARNING] * 2


def test_a_forced_jax_platform_jax_cannot_start_is_refused(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top

  def devices():
    raise RuntimeError("Unknown backend: 'cuda' requested")

  monkeypatch.setattr(jax, "devices", devices)
  common.check_jax_platforms({})
  common.check_jax_platforms({"JAX_PLATFORMS": " cpu", "JAX_PLATFORM_NAME": "cuda"})
  for name, value in (("JAX_PLATFORMS", "cpu,cuda"), ("JAX_PLATFORM_NAME", "cuda")):
    with pytest.raises(ValueError, match=re.escape(
        f"{name}={value!r}: JAX cannot start that backend on this machine (Unknown backend: "
        f"'cuda' requested); unset {name} or name an available one, e.g. cpu")):
      common.check_jax_platforms({name: value})


def test_names_must_be_given_once_case_blind():
  common.check_names_once(["pomt", "topk"], "methods", "method")
  for names in (["pomt", "POMT"], []):
    with pytest.raises(ValueError, match=re.escape(
        f"--methods must name each method once, got {names}")):
      common.check_names_once(names, "methods", "method")


def test_a_published_folder_is_an_out_dir_only_when_published_whole_again(tmp_path):
  """Files are not written into weights (a folder published whole); the main job's --out_dir,
  published whole itself, may replace such a folder of its own."""
  cfg = get_config("test_tiny_vit")
  wdir = checkpoint.save_weights(str(tmp_path / "w"), cfg, model.init_params(cfg, 0))
  with pytest.raises(ValueError, match=f"^--out_dir={wdir} is a folder vitprune wrote as a "
                     "whole"):
    common.check_output_dir(wdir)
  common.check_output_dir(wdir, published=True)


def test_results_must_carry_their_format(tmp_path):
  out = tmp_path / "r.json"
  with pytest.raises(ValueError, match=f"^results for {out} must carry format 'f'$"):
    common.write_result(str(out), {"format": "g"}, "f")
  assert not out.exists()


def test_a_new_dir_may_be_an_empty_folder_and_an_overwrite_only_of_ours(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  common.check_new_dir(str(empty), "out")
  (empty / "notes.txt").write_text("mine")
  with pytest.raises(FileExistsError, match=re.escape(
      f"--out={empty} already exists (pass --overwrite to replace it)")):
    common.check_new_dir(str(empty), "out")
  common.check_new_dir(str(empty), "out", overwrite=True)
  with pytest.raises(atomic.ForeignOutputError, match=f"{empty}"):
    common.check_new_dir(str(empty), "out", overwrite=True, is_ours=lambda p: False)
  assert (empty / "notes.txt").read_text() == "mine"


def test_random_weights_pass_the_training_split_guard():
  """`load_model`'s source for random weights is no folder: they were trained on nothing."""
  assert common.check_digits_split("init_params(seed=0)", "digits") is None


def test_a_smoke_run_of_weights_is_noted(tmp_path, capsys):
  common.note_smoke_run(str(tmp_path), {"max_steps": 1, "test_accuracy": 0.09375})
  common.note_smoke_run(str(tmp_path), {"max_steps": 3})
  common.note_smoke_run(str(tmp_path), {"epochs": 3})
  assert capsys.readouterr().err == (
      f"note: {tmp_path} were trained for 1 step only (train_digits --max_steps, a smoke run, "
      "held-out accuracy 0.0938)\n"
      f"note: {tmp_path} were trained for 3 steps only (train_digits --max_steps, a smoke run)\n")


def test_the_command_line_gives_a_flag_with_a_short_name_once():
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(fv):
    flags.DEFINE_integer("num", 1, "", short_name="n", flag_values=fv)

  assert common.command_line("m", common.parse(define, ["-n", "2"])) == "python -m m --num=2"


def test_a_seed_takes_32_bits_at_most():
  """jax PRNG keys take 32 bits: --seed=2**32 wrapped to seed 0."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import train_digits  # pylint: disable=g-import-not-at-top
  assert common.parse(train_digits.define_flags, ["--seed=4294967295"]).seed == 2 ** 32 - 1
  with pytest.raises(flags.IllegalFlagValueError, match="4294967296 is not"):
    common.parse(train_digits.define_flags, ["--seed=4294967296"])


def test_a_stray_argument_is_a_usage_error(capsys):
  """The run did not start: exit 2 with the hint (as absl's own flag errors)."""
  ran = []
  with pytest.raises(SystemExit) as e:
    common.run_in_process(ran.append, lambda fv: None, ["extra"])
  assert (e.value.code, ran) == (2, [])
  assert capsys.readouterr().err == "error: unexpected arguments: ['extra']\n(see --help)\n"


def test_method_options_split_at_the_first_equals_and_read_booleans_in_any_case():
  assert common.parse_method_options(["schedule=keep@3=33", "nested=TRUE", " k =1.5", "s=abc",
                                      "b= False "]) == {
      "schedule": "keep@3=33", "nested": True, "k": 1.5, "s": "abc", "b": False}


def test_an_output_inside_a_data_folder_named_like_a_data_word_is_refused(tmp_path, monkeypatch):
  """`estimate --data=Digits` (or `--data=none`) reads the folder ./Digits (./none): only
  `digits` itself names the bundled set there, and `none` is a word of the benchmark's alone,
  yet an --out_dir inside such a folder was let by."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  flags.DEFINE_string("data", "digits", "", flag_values=fv)
  fv(["prog"])
  monkeypatch.chdir(tmp_path)
  for value in ("Digits", "none"):
    (tmp_path / value / "3").mkdir(parents=True)
    fv.data = value
    with pytest.raises(ValueError, match=f"^--out_dir={value}/run is inside --data={value}: "):
      common.check_outside_data(f"{value}/run", "out_dir", fv)
  fv.data = "none"                                 # the benchmark's word: no data is read
  common.check_outside_data("none/run", "out_dir", fv, words=("digits", "none"))


def test_counted_says_one_noun_or_its_plural():
  from vitprune.console import counted  # pylint: disable=g-import-not-at-top
  assert [counted(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
  assert counted(1, "flat stretch", "flat stretches") == "1 flat stretch"
  assert counted(3, "flat stretch", "flat stretches") == "3 flat stretches"


def test_a_forced_jax_platform_says_which_backends_jax_knows(monkeypatch):
  """A README walk-through: JAX_PLATFORMS=gpu quoted JAX's 'Unable to initialize backend
  'rocm'' (the last GPU backend JAX tried, not the one asked for); an empty AssertionError
  (cuda without its plugin) printed as '(AssertionError)'."""
  import jax  # pylint: disable=g-import-not-at-top
  errors = iter([RuntimeError(
      "Unable to initialize backend 'rocm': Backend 'rocm' is not in the list of known "
      "backends: ['cpu', 'tpu']. (set JAX_PLATFORMS='' to automatically choose an available "
      "backend)"), AssertionError()])

  def devices():
    raise next(errors)

  monkeypatch.setattr(jax, "devices", devices)
  for platform, reason in (    # (in the order `devices` raises its errors)
      ("gpu", "this jax build has no such backend; it knows cpu, tpu"),
      ("cuda", "jax raised AssertionError with no message: is a jax build with that backend "
               "installed?")):
    with pytest.raises(ValueError) as e:
      common.check_jax_platforms({"JAX_PLATFORMS": platform})
    assert str(e.value) == (
        f"JAX_PLATFORMS='{platform}': JAX cannot start that backend on this machine ({reason}); "
        "unset JAX_PLATFORMS or name an available one, e.g. cpu")


def test_a_leading_tilde_in_a_flag_is_expanded_as_the_shell_would(tmp_path, monkeypatch):
  """`--out_dir=~/runs` reaches the program unexpanded (the shell expands '~' only at the start
  of a word), and a run wrote a folder named '~' in the working directory: every string flag
  given, list entries too, is expanded; a '~name' that is no user's home is left as it is, as
  the shell leaves it (a review: `--out_name=~draft.json` was refused); flags left at their
  defaults and values with a '~' inside are not touched."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(fv):
    flags.DEFINE_string("out_dir", None, "", flag_values=fv)
    flags.DEFINE_list("paths", [], "", flag_values=fv)
    flags.DEFINE_string("note", "~default", "", flag_values=fv)
    flags.DEFINE_integer("n", 1, "", flag_values=fv)

  monkeypatch.setenv("HOME", str(tmp_path))
  fv = common.parse(define, ["--out_dir=~/runs", "--paths=~,a~b,~/x", "--n=2"])
  assert fv.out_dir == str(tmp_path / "runs") and fv.n == 2
  assert fv.paths == [str(tmp_path), "a~b", str(tmp_path / "x")]
  assert fv.note == "~default"                          # (a default: the user gave no '~')
  assert "--out_dir=" + str(tmp_path / "runs") in common.command_line("m", fv)
  fv = common.parse(define, ["--paths=a,~nosuchuser_vitprune/x", "--out_dir=~draft.json"])
  assert (fv.paths, fv.out_dir) == (["a", "~nosuchuser_vitprune/x"], "~draft.json")


def test_the_cli_writes_under_the_home_a_tilde_names(tmp_path, monkeypatch):
  """End to end, in process: `--out_dir=~/est` writes under $HOME, and nothing named '~'
  appears in the working directory."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.chdir(tmp_path)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code, out, err = run_cli_in_process(root, "estimate", [
      "--num_images=20", "--tokens=65", "--out_dir=~/est"])
  assert code == 0, err
  (written,) = os.listdir(tmp_path / "home" / "est")
  assert f"wrote {tmp_path / 'home' / 'est' / written}" in out
  assert sorted(os.listdir(tmp_path)) == ["home"]


def test_a_folder_without_weights_is_named_by_its_flag(tmp_path, monkeypatch):
  """`--weights=weights` (the folder above the weights) was 'weights is not a vitprune weights
  directory', as if it named the flag: the message names `--weights=` itself."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  monkeypatch.chdir(tmp_path)
  (tmp_path / "weights").mkdir()
  code, _, err = run_cli_in_process(root, "estimate", ["--weights=weights", "--tokens=65"])
  assert (code, err) == (1, "error: --weights=weights is not a vitprune weights directory (no "
                            "config.json)\n")
  with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(tmp_path))}/weights is not a "):
    checkpoint.read_weights_config(str(tmp_path / "weights"))      # (the library: the path)


def test_named_by_flag_prefixes_only_a_refusal_of_one_of_its_parameters():
  """Mutation audit: a ValueError starting with any of the named parameters gets '--' (the
  flag of that name); another ValueError, or another exception, passes through as it was."""
  for text in ("epochs=0 is not positive", "lr must be > 0"):
    with pytest.raises(ValueError, match=f"^--{re.escape(text)}$"):
      with common.named_by_flag("epochs", "lr"):
        raise ValueError(text)
  with pytest.raises(ValueError, match=r"^data '\.' has no images$"):
    with common.named_by_flag("epochs", "lr"):
      raise ValueError("data '.' has no images")
  with pytest.raises(KeyError):
    with common.named_by_flag("epochs"):
      raise KeyError("epochs")
  with common.named_by_flag("epochs"):      # (nothing raised: nothing said)
    pass


def test_the_subset_sizes_name_both_their_flags():
  """Mutation audit: `SUBSET_PARAMS`, the sizes `estimate.load_eval_data` refuses, name
  --num_images and --holdout_images alike."""
  for text in ("num_images=5000 exceeds the 359 images available",
               "holdout_images=40 leaves none of the 40 images (num_images) to choose on"):
    with pytest.raises(ValueError, match=f"^--{re.escape(text)}$"):
      with common.named_by_flag(*common.SUBSET_PARAMS):
        raise ValueError(text)


def test_a_data_flag_refusal_tells_a_dangling_link_and_every_word(tmp_path, monkeypatch):
  """Mutation audit: `check_data_flag` says a dangling link is one (not that it does not
  exist), lists every data word a CLI takes, and a data word that is a file here (not a
  folder) keeps its meaning."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  fv = flags.FlagValues()
  flags.DEFINE_string("data", "digits", "", flag_values=fv)
  os.symlink("gone", "link")
  (tmp_path / "digits").write_text("")                 # a file named like the word
  for argv, words, said in (
      (["--data=link"], ("digits",), "--data=link is a dangling symbolic link, not a folder: "
                                     "give a folder of images or 'digits' for the bundled digits"),
      (["--data=nowhere"], ("digits", "none"), "--data=nowhere does not exist: give a folder "
       "of images, 'digits' for the bundled digits or 'none' for no data (latency only)"),
      (["--data=digits"], ("digits",), None)):
    fv.unparse_flags()
    fv(["prog", *argv])
    if said is None:
      common.check_data_flag(fv, words=words)
      continue
    with pytest.raises(ValueError) as e:
      common.check_data_flag(fv, words=words)
    assert str(e.value) == said


def test_a_tilde_default_is_left_as_it_is(tmp_path, monkeypatch):
  """Mutation audit: only flags given are expanded; a default with a leading '~/' is kept
  as written (the user did not type it)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(fv):
    flags.DEFINE_string("cache", "~/cache", "", flag_values=fv)
    flags.DEFINE_string("out", "~/out", "", flag_values=fv)

  monkeypatch.setenv("HOME", str(tmp_path))
  fv = common.parse(define, ["--out=~/o"])
  assert (fv.cache, fv.out) == ("~/cache", str(tmp_path / "o"))


def test_uncovered_flag_refusals_of_convert_and_run_deployed(tmp_path):
  """Refusals the suite never reached (coverage probe): each a one-line error naming the flag,
  exit 1, nothing written."""
  from tests.conftest import run_cli_in_process  # pylint: disable=g-import-not-at-top
  for cli, argv, said in [
      ("convert", ["--model=test_tiny_vit", "--checkpoint=t.pth", "--num_classes=-1"],
       "--num_classes must be >= 0, got -1"),
      ("run_deployed", ["--images=digits"], "--artifact and --images are required"),
      ("run_deployed", ["--artifact=a"], "--artifact and --images are required"),
      ("run_deployed", ["--artifact=a", "--images=digits", "--num_workers=-1"],
       "--num_workers must be >= 0, got -1")]:
    assert run_cli_in_process(tmp_path, cli, argv) == (1, "", f"error: {said}\n"), argv
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text, said", [
    ("Output directory (default: outputs/x/ for the job; outputs/y/ else).",
     "outputs/x/ for the job"),
    ("Registered model; default vit_digits with its weights.", "vit_digits with its weights"),
    ("Method (default: the estimate's, else pomt).", "the estimate's, else pomt"),
    ("Seeds (defaults to 0).", None), ("No word of it.", None), ("", None), (None, None),
    ("(default: )", None), ("(default: .)", None), ("A nondefault grid of 5 counts.", None)])
def test_default_in_help_reads_the_first_clause_of_what_a_help_says(text, said):
  assert common.default_in_help(text) == said


def test_input_flag_names_the_flag_a_refused_input_came_through(tmp_path, monkeypatch):
  """console.input_flag: a reader's refusal led by the path (as given or made absolute) gets
  `flag=` before it, any other `flag: `, on one line; one naming the flag already is left as it
  is; the kind of error is kept and the reader's traceback is not chained to it."""
  from vitprune import console
  monkeypatch.chdir(tmp_path)
  full = str(tmp_path / "p.json")

  def refused(error):
    with pytest.raises(Exception) as info:
      with console.input_flag("--profile", "p.json"):
        raise error
    return info.value
  for error, kind, said in [
      (ValueError("p.json: not valid JSON"), ValueError, "--profile=p.json: not valid JSON"),
      (ValueError(f"{full} is a\n folder"), ValueError, f"--profile={full} is a folder"),
      (FileNotFoundError("profile file 'p.json' does not exist"), FileNotFoundError,
       "--profile: profile file 'p.json' does not exist"),
      (IsADirectoryError("profile file 'p.json' is a directory"), IsADirectoryError,
       "--profile: profile file 'p.json' is a directory"),
      (KeyError("no 'model' in p.json"), KeyError, "--profile: no 'model' in p.json"),
      # a reader's lead naming the flag's noun gives way to it ('--kit: kit: ...' said it twice)
      (ValueError("profile: d/p.json is missing"), ValueError, "--profile: d/p.json is missing")]:
    err = refused(error)
    assert type(err) is kind and err.args == (said,), (error, err)
    assert err.__cause__ is None and err.__suppress_context__
  for error in (ValueError("--profile p.json is a folder"),
                ValueError("give --profile=p.json a profile"),
                ValueError("the file of --profile is not JSON"), TypeError("p.json: no")):
    assert refused(error) is error
  with console.input_flag("--profile", "p.json"):
    pass
  # The error keeps its class, so a caller catching it still can; a class that cannot carry
  # the line alone (json's JSONDecodeError) gives way to its builtin base.
  from vitprune.records.solution import SolutionError  # pylint: disable=g-import-not-at-top
  from vitprune.registry import UnknownModelError  # pylint: disable=g-import-not-at-top
  for error in (SolutionError("p.json: bad"), UnknownModelError("no model 'x'")):
    assert type(refused(error)) is type(error), error
  err = refused(UnknownModelError("no model 'x'"))
  assert isinstance(err, KeyError) and str(err) == "--profile: no model 'x'"
  try:
    json.loads("{")
  except ValueError as e:
    err = refused(e)
  assert type(err) is ValueError and str(err) == (
      "--profile: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")
  with pytest.raises(ValueError, match="^p.json: bad$"):    # no flag (a library call): as it is
    with console.input_flag(None, "p.json"):
      raise ValueError("p.json: bad")
