"""Progress of a long measurement on stderr: a tqdm bar where stderr is a terminal, and elsewhere (a
log file, CI, `nohup`) one plain line at most every `interval` seconds, e.g. "vit_digits b1
model: 40/128 steps, 31 s", so that a log shows where a run is without filling up with a bar's
redraws."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO, Union

from tqdm import tqdm

from vitprune.console import counted

# Seconds between two progress lines where stderr is not a terminal.
LINE_INTERVAL_S = 30.0


class LineProgress:
  """The part of tqdm's interface the runners use (`update`, `refresh`, a `total` they may
  raise, `n`, a context manager) as plain lines: one when `interval` seconds have passed since
  the start or the last line, none once every step is done (the caller reports the result)."""

  def __init__(self, total: int, desc: str, *, unit: str = "step", stream: TextIO,
               interval: float = LINE_INTERVAL_S,
               clock: Callable[[], float] = time.monotonic):
    self.total, self.desc, self.unit, self.n = total, desc, unit, 0
    self._stream, self._interval, self._clock = stream, interval, clock
    self._start = self._last = clock()

  def update(self, n: int = 1) -> None:
    self.n += n
    now = self._clock()
    if self.n < self.total and now - self._last >= self._interval:
      self._last = now
      print(f"{self.desc}: {self.n}/{counted(self.total, self.unit)}, "
            f"{now - self._start:.0f} s", file=self._stream, flush=True)

  def refresh(self) -> None:
    """(A bar redraws its new total; a line waits for the next `update`.)"""

  def close(self) -> None:
    pass

  def __enter__(self) -> "LineProgress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _is_terminal(stream: TextIO) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):     # (no isatty, or a closed stream)
    return False


def bar(total: int, desc: str, *, enabled: bool = True, unit: str = "step",
        stream: Optional[TextIO] = None, interval: Optional[float] = None
        ) -> Union[tqdm, LineProgress]:
  """A progress reporter over `total` steps on `stream` (stderr): a tqdm bar on a terminal,
  `LineProgress` (every `interval` seconds, default LINE_INTERVAL_S) elsewhere, a disabled bar
  (silent) when not `enabled`."""
  stream = sys.stderr if stream is None else stream
  interval = LINE_INTERVAL_S if interval is None else interval
  if not enabled:
    return tqdm(total=total, disable=True)
  if _is_terminal(stream):
    return tqdm(total=total, desc=desc, file=stream, unit=unit, dynamic_ncols=True)
  return LineProgress(total, desc, unit=unit, stream=stream, interval=interval)
