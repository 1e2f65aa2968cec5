"""One home for orbax checkpoint I/O (weights directories and deployment artifacts); imports
neither the model code nor orbax until used."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from typing import Any


def checkpointer():
  """orbax's `StandardCheckpointer` (imported here: the orbax import is slow)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer()


def restore(directory: str, target: Any) -> Any:
  """The pytree checkpointed in `directory`, restored onto `target`'s structure; the library's
  exception when it cannot (callers name the directory), without the tracebacks its I/O threads
  print on the way (`_stderr_kept_unless_failing`)."""
  with _stderr_kept_unless_failing():
    return checkpointer().restore(directory, target)


@contextlib.contextmanager
def _stderr_kept_unless_failing():
  """Holds back what is written to file descriptor 2 inside the block: replayed if the block
  succeeds, dropped if it raises. A corrupt checkpoint makes orbax's I/O threads print
  'Event loop is closed' tracebacks while the restore fails and for a moment after it; the
  caller reports the failure in one line instead."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      time.sleep(1.0)       # the I/O threads finish failing within it (error path only)
      os.dup2(saved, 2)
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
    held.seek(0)
    text = held.read()
    if text:
      os.write(2, text)
