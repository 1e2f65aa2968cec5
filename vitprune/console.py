"""What every vitprune command line sets up for its process (the experiments CLIs and the board
CLI `vitprune.edge` alike; no jax here): standard streams that print a path's undecodable bytes
escaped (`\\udcff`) instead of failing after the work is done, warnings on one line, and a
Ctrl-C that is never lost. SIGTERM (`kill`, `timeout`, a batch scheduler) is handled as Ctrl-C
is, so a run's `finally` blocks remove what it staged, and ends with `error: terminated`, exit
143 (its default action killed the process on the spot, leaving temporary folders behind); so is
SIGHUP (a closed terminal or ssh session: `error: hung up`, exit 129).

Python raises KeyboardInterrupt wherever the main thread is, and an exception raised inside a
callback (JAX's garbage-collection hook, a weakref finaliser) is printed and dropped, so an
early Ctrl-C could let a run finish and replace its outputs. The handler `setup_process`
installs therefore also records the interrupt; `raise_if_interrupted` (called by
`vitprune.atomic` before anything is published, and by the CLIs' entry point after the run)
raises it again. `exit_on_early_interrupt` covers the imports before that: nothing is written
yet, so an interrupt there exits at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings
from typing import Callable, Iterator, List, NoReturn, Optional, Tuple

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130    # a refused run, a bad command line, Ctrl-C
# Every command line's --seed at most (the board's too): jax PRNG keys take 32 bits, and a larger
# seed wrapped (2**32 gave seed 0).
MAX_SEED = 2 ** 32 - 1
# Signals that stop a run as Ctrl-C does, where they have their default action, and their words.
STOP_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}
_interrupted = False
_terminated = False          # by one of STOP_SIGNALS (the first: `_stop_signal`)
_stop_signal = signal.SIGTERM
_held = 0            # > 0 inside `interrupts_held`: a signal is recorded, raised on leaving
_written: List[str] = []      # outputs this CLI process published (`wrote`), for its error line
_is_cli = False               # `setup_process` ran: this process is one command-line run
_previous_unraisablehook = sys.__unraisablehook__


def one_line_warning(message, category, filename, lineno, line=None) -> str:
  """`warning: <Category>: <message>` on one line (Python prints the library's file, line and
  source line too: PIL's DecompressionBombWarning took two)."""
  del filename, lineno, line
  return f"warning: {category.__name__}: {printable(' '.join(str(message).split()))}\n"


def resource_exhausted(error: BaseException) -> Optional[str]:
  """The line of a runtime's error saying RESOURCE_EXHAUSTED (jax or IREE: the device out of
  memory), stripped, or None when it says nothing of the kind."""
  return next((ln.strip() for ln in str(error).splitlines() if "RESOURCE_EXHAUSTED" in ln),
              None)


def one_line(message) -> str:
  """`message` on one line, control characters escaped (`printable`): every CLI's error line.
  KeyError: its text, not the quoted repr; an exception without text (numpy's bare MemoryError):
  what it is, not an empty line."""
  if isinstance(message, KeyError) and message.args:
    message = message.args[0]
  text = printable(" ".join(str(message).split()))
  if not text and isinstance(message, MemoryError):
    return "out of memory (MemoryError)"
  return text or (type(message).__name__ if isinstance(message, BaseException) else text)


def counted(n: int, noun: str, plural: str = "") -> str:
  """'1 image', '3 images' ('1 flat stretch', '2 flat stretches' with `plural`)."""
  return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shown_apart(a: float, b: float, digits: int = 6, spec: str = "g") -> Tuple[str, str]:
  """`a` and `b` formatted `.{digits}{spec}` ('g' significant digits, 'f' decimals), or with as
  many more digits as it takes for the texts to differ and to order as the numbers do ('floor
  0.97 is infeasible: the best ... is 0.97'; "an IQR of 10% of its median, above 10%" for
  10.02 %, a probe)."""
  for d in range(digits, digits + 16):
    sa, sb = f"{a:.{d}{spec}}", f"{b:.{d}{spec}}"
    if a == b or (sa != sb and (float(sa) < float(sb)) == (a < b)):
      return sa, sb
  return repr(a), repr(b)


def printable(text: str) -> str:
  """`text` with its control characters escaped (`\\t`, `\\n`, `\\x1b`): a file name printed in
  a tab-separated line (a name holding a tab and a newline printed a second, fake row)."""
  return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@contextlib.contextmanager
def input_flag(flag: Optional[str], value: str) -> Iterator[None]:
  """A refusal of the file or folder given as `flag`=`value` ('--profile', its path) names the
  flag: the readers (`jsonio.read_json`, the records', the artifact's) name the file alone, so
  with two inputs of one kind on a command line (a profile passed as solve's --estimate) the line
  did not say which flag was wrong (a probe). A message led by the path (as given, or made
  absolute) gets `flag=` before it, any other `flag: ` (in place of a lead naming the flag's
  noun, `kit: ...`: '--kit: kit: ...' said it twice); one naming `flag` already is left as it
  is. The error keeps its class (a caller catching `SolutionError` or `IsADirectoryError` still
  can) unless the class cannot carry the line alone (json's JSONDecodeError): then its builtin
  base, FileNotFoundError, OSError, ValueError or KeyError. `flag` None (a library call, no
  command line): the error as it is."""
  try:
    yield
  except (OSError, ValueError, KeyError) as e:
    if flag is None:
      raise
    text = one_line(e)
    if text.startswith(flag) or f" {flag}=" in text or f" {flag} " in text:
      raise
    noun = flag.lstrip("-") + ": "
    text = text[len(noun):] if text.startswith(noun) else text
    for path in (str(value), os.path.abspath(value)):
      if text.startswith((path + ":", path + " ")):
        text = f"{flag}={text}"
        break
    else:
      text = f"{flag}: {text}"
    try:
      error = type(e)(text)
    except TypeError:              # (a class taking more than its message)
      error = None
    if error is None or one_line(error) != text:
      error = next(k(text) for k in (FileNotFoundError, OSError, ValueError, KeyError)
                   if isinstance(e, k))
    raise error from None


def fail(message, code: int = EXIT_ERROR, hint: bool = False):
  """Prints `error: <message>` (+ `(see --help)` when `hint`) to stderr and exits `code`: how
  every command line ends a refused run (`EXIT_USAGE` with the hint for a bad command line)."""
  sys.stderr.write(f"error: {one_line(message)}\n")
  if hint:
    sys.stderr.write("(see --help)\n")
  sys.stderr.flush()
  sys.exit(code)


def setup_process() -> None:
  """Configures this process's stdout/stderr, warning format and Ctrl-C handling (call once, in
  `main`)."""
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors="backslashreplace")
  warnings.formatwarning = one_line_warning
  global _previous_unraisablehook, _is_cli
  _is_cli = True
  if sys.unraisablehook is not _quiet_recorded_interrupt:
    _previous_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _quiet_recorded_interrupt
  install_interrupt_handler()


def _quiet_recorded_interrupt(unraisable) -> None:
  """`sys.unraisablehook`: an interrupt raised inside a callback (JAX's garbage-collection
  hook, a weakref finaliser) printed "Exception ignored in ..." and a traceback before the
  error line; it is recorded (`_record_interrupt`) and raised again, so say nothing of it.
  Anything else goes to the hook it replaced (Python's, or a library's)."""
  if isinstance(unraisable.exc_value, KeyboardInterrupt) and _interrupted:
    return
  _previous_unraisablehook(unraisable)


def finish_quietly() -> None:
  """After a run succeeded (outputs written, success printed), or once an interrupted run
  exits: Ctrl-C, SIGTERM and SIGHUP are ignored while the process exits. Python's finalisation
  restores their default actions, so a signal in the last moments killed a finished run (exit
  130/143, no error line, its outputs already replaced). Only in the main thread, and only
  where this module handles them. (A process that then hangs in its teardown needs SIGKILL; a
  child started after this inherits the ignored signals: start none.)"""
  if threading.current_thread() is not threading.main_thread():
    return
  for sig in (signal.SIGINT, *STOP_SIGNALS):
    if signal.getsignal(sig) is _record_interrupt:
      signal.signal(sig, signal.SIG_IGN)


def _record_interrupt(signum, frame) -> None:
  """SIGINT (and STOP_SIGNALS) handler: remember the interrupt, then raise it as Python's
  default SIGINT handler does (outside `interrupts_held`)."""
  del frame
  global _interrupted, _terminated, _stop_signal
  if signum in STOP_SIGNALS and _terminated:     # a repeated SIGTERM (`kill` twice, a
    return                                       # scheduler): let the cleanup finish
  _interrupted = True
  if signum in STOP_SIGNALS:
    _terminated, _stop_signal = True, signum
  if not _held:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_held(raise_after: bool = True) -> Iterator[None]:
  """Ctrl-C and STOP_SIGNALS are recorded but not raised inside (`vitprune.atomic`'s renames that
  publish an output: stopped between moving the old one aside and putting the new one in place,
  its cleanup deleted both); the interrupt is raised on leaving, once the output is whole.
  `raise_after=False`: the cleanup of a failed write (a second Ctrl-C or a SIGTERM cut the
  removal of a staged folder short and left it); `raise_held` then raises an interrupt recorded
  meanwhile together with the failure, and an interrupt passing through goes on, the one
  recorded meanwhile said with it (`interrupt_exit`)."""
  global _held
  _held += 1
  try:
    yield
  finally:
    _held -= 1
  if not _held and raise_after:
    raise_if_interrupted()


def is_cli() -> bool:
  """Whether this process is one command-line run (`setup_process` ran)."""
  return _is_cli


def wrote(path: str) -> None:
  """Notes an output this command-line run published (after `setup_process`; a library user's
  process keeps no list): an interrupt after it says so (`interrupt_exit`), as the output is
  then the new one, not the one before the run."""
  if _is_cli:
    _written.append(path)


def exit_after_help(e: SystemExit) -> None:
  """Re-raises `e`, caught while absl parsed the flags: absl's help flags (--help, -?,
  --helpshort, --helpfull, --helpxml) print the usage and exit 1, the only exit while parsing;
  asking for help succeeded, so exit 0."""
  if e.code == 1:
    raise SystemExit(0) from None
  raise e


def refuse_only_check_args(fv) -> None:
  """Exits EXIT_USAGE with one line when absl's --only_check_args is set: absl then exits 0
  after parsing the flags alone, before any of the run's own checks (a negative --batch_size
  or a schedule beyond the model passed it as "OK"); those checks need the model and the
  input files, so they run, and refuse bad input, as the run starts, before any work."""
  if "only_check_args" in fv and fv["only_check_args"].value:
    fail("--only_check_args checks the flags' syntax alone, not the values a run refuses; "
         "run the command itself: it checks its arguments and inputs before any work",
         EXIT_USAGE, hint=True)


def expand_home(fv) -> None:
  """Expands a leading '~' in every string flag given (lists too), as the shell would have:
  it does so only at the start of a word, so `--out_dir=~/runs` reached the program as
  '~/runs' and the run wrote a folder named '~' into the working directory (one a later
  `rm -rf ~` would take the home directory with). As in the shell, '~name' naming no user is
  left as it is (`--out_name=~draft.json` is a file name)."""
  for name, flag in sorted(fv._flags().items()):  # pylint: disable=protected-access
    value = flag.value
    values = value if isinstance(value, list) else [value]
    if name != flag.name or not flag.present or not any(
        isinstance(v, str) and v.startswith("~") for v in values):
      continue
    expanded = [os.path.expanduser(v) if isinstance(v, str) else v for v in values]
    flag.value = expanded if isinstance(value, list) else expanded[0]


def interrupted() -> bool:
  """Whether this process received Ctrl-C (or one of STOP_SIGNALS) since `setup_process`."""
  return _interrupted


def interrupt_exit(error: object = None) -> tuple:
  """(error text, exit status) of an interrupted run: ('terminated', 143) after SIGTERM, ('hung up',
  129) after SIGHUP, else ('interrupted', 130); the text ends '(after writing PATH)' when the
  run had published an output that is still there (`wrote`; a file staged inside a published
  directory is not). With `error` (the run also failed, the interrupt held meanwhile): its line,
  the interrupt in brackets."""
  text, code = ((STOP_SIGNALS[_stop_signal], 128 + _stop_signal) if _terminated else
                ("interrupted", EXIT_INTERRUPTED))
  written = [p for p in list(dict.fromkeys(reversed(_written)))[::-1]   # (a file rewritten
             if os.path.lexists(p)]     # per phase: once, where it was last); not those staged
                                        # in a published directory
  if written:
    more = f" and {len(written) - 1} more" if len(written) > 1 else ""
    text += f" (after writing {printable(written[-1])}{more})"
  return (text if error is None else f"{one_line(error)} ({text})"), code


def exit_interrupted(error: object = None, cleanup: Optional[Callable[[], None]] = None
                     ) -> NoReturn:
  """An interrupted CLI process's end: its error line (`interrupt_exit`: `error`'s, when the
  run also failed, the interrupt in brackets), stdout and stderr flushed, `cleanup()` (e.g.
  `atomic.remove_exit_paths`), then exit 130 (143, 129) at once, without the interpreter's
  teardown: tearing XLA or IREE down while a call started before the interrupt still runs can
  crash or hang (train_digits: SIGSEGV in 3 of 3 runs of a Ctrl-C test; `vitprune.edge bench`:
  alive a minute after its error line, in a test run under load). By then every `finally` of
  the run has removed its staged outputs."""
  finish_quietly()         # a second signal now cut the cleanup short, printing twice
  text, code = interrupt_exit(error)
  try:            # after a hang-up stderr may be gone (EIO, a broken pipe): exit all the same
    sys.stderr.write(f"error: {text}\n")
    sys.stdout.flush()
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  if cleanup is not None:
    cleanup()
  os._exit(code)


class InterruptedFailure(KeyboardInterrupt):
  """An interrupt that arrived while a write failed, raised once its cleanup finished:
  `failure` is why the write failed (a CLI says both: `interrupt_exit(failure)`)."""

  def __init__(self, failure: BaseException):
    super().__init__()
    self.failure = failure


def failure_of(interrupt: KeyboardInterrupt) -> Optional[BaseException]:
  """The failure an `InterruptedFailure` carries; None for a plain interrupt."""
  return getattr(interrupt, "failure", None)


def raise_held(failure: BaseException) -> None:
  """After the cleanup of a failed write (its signals held, `interrupts_held(raise_after=False)`):
  when an interrupt has arrived, no hold is left and `failure` is not itself an interrupt,
  raises `InterruptedFailure(failure)`, so that neither is lost (raising the interrupt alone
  lost the error's line, 'error: terminated'; raising the error alone let a caller that
  catches it carry on past the interrupt). Otherwise returns."""
  if _interrupted and not _held and not isinstance(failure, KeyboardInterrupt):
    raise InterruptedFailure(failure) from failure


def raise_if_interrupted() -> None:
  """KeyboardInterrupt when an interrupt arrived and was swallowed (see the module doc)."""
  if _interrupted:
    raise KeyboardInterrupt


def _may_handle_sigint() -> bool:
  """Only the main thread may set handlers, and only Python's default one is replaced: a
  process started with SIGINT ignored (a shell's background job `cmd &`) stays immune to a
  Ctrl-C meant for the foreground."""
  return (threading.current_thread() is threading.main_thread()
          and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _exit_now))


def install_interrupt_handler() -> None:
  """Makes Ctrl-C recorded as well as raised (`_record_interrupt`), where `_may_handle_sigint`;
  STOP_SIGNALS too where they still have their default action (not ignored, e.g. by nohup; no
  handler of the caller's)."""
  if _may_handle_sigint():
    signal.signal(signal.SIGINT, _record_interrupt)
  if threading.current_thread() is not threading.main_thread():
    return
  for sig in STOP_SIGNALS:
    if signal.getsignal(sig) in (signal.SIG_DFL, _record_interrupt, _exit_now):
      signal.signal(sig, _record_interrupt)


def _exit_now(signum, frame) -> None:
  del frame
  if signum in STOP_SIGNALS:
    os.write(2, f"error: {STOP_SIGNALS[signum]}\n".encode())
    os._exit(128 + signum)
  os.write(2, b"error: interrupted\n")
  os._exit(EXIT_INTERRUPTED)


def exit_on_early_interrupt(*packages: str) -> None:
  """When this process is `python -m <package>.<cli>` for one of `packages`: Ctrl-C exits at once
  with `error: interrupted` (130), and STOP_SIGNALS (where they have their default action) with
  `error: terminated` (143) or `error: hung up` (129), until `setup_process` installs the real
  handler. Called where the CLI's package is first imported, before its heavy imports (jax: ~1
  s); other importers (tests, library users) keep their own handlers."""
  argv = list(getattr(sys, "orig_argv", ()))
  if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
    return
  module = argv[argv.index("-m") + 1]
  if not any(module == p or module.startswith(p + ".") for p in packages):
    return
  if _may_handle_sigint():
    signal.signal(signal.SIGINT, _exit_now)
  if threading.current_thread() is threading.main_thread():
    for sig in STOP_SIGNALS:      # (also when SIGINT is ignored: a background job `cmd &`)
      if signal.getsignal(sig) == signal.SIG_DFL:
        signal.signal(sig, _exit_now)
