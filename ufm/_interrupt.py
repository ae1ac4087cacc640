"""Ctrl-C (SIGINT) during a long computation: stop at a safe point, keep what was computed.

Every long-running entry point (``ufm.simulate``, ``ufm.sweep``, ``ufm.fit``) runs its
work inside :func:`deferred`. There, in the main thread, SIGINT does not raise at a
random bytecode (or, worse, while a compiled kernel runs, where Python cannot handle it):
it only sets a flag. The computation looks at the flag between chunks of bounded work
(:func:`requested`), stops, and assembles its partial result. A second Ctrl-C while the
flag is set restores Python's own behaviour and raises ``KeyboardInterrupt`` at once.

What the user gets is decided by :func:`finish` and the ``on_interrupt`` argument:

* ``"raise"`` (the default): ``KeyboardInterrupt`` is raised, carrying the partial
  result in its ``result`` attribute (:func:`interrupted`). A script that does not catch
  it stops where the user pressed Ctrl-C and exits as after any Ctrl-C (killed by SIGINT,
  status 130 in a shell, so shell loops and ``make`` stop too), as with scipy or tqdm,
  which let ``KeyboardInterrupt`` through; ``except KeyboardInterrupt as err: err.result``
  recovers the work. (A subclass would not do: Python exits with status 1, not by SIGINT,
  when the uncaught exception is not exactly ``KeyboardInterrupt``.)
* ``"return"``: the partial result is returned, marked interrupted (``status``
  ``"interrupted"``; ``meta["interrupted"]`` for a fit), and the program goes on.

Outside the main thread (Dask workers, joblib threads) or when someone else has
installed a SIGINT handler, nothing is installed and a ``KeyboardInterrupt`` raised in
Python code is caught around the chunks instead (same partial result).
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["check_on_interrupt", "deferred", "finish", "interrupted", "requested"]

ON_INTERRUPT = ("raise", "return")


def interrupted(result, message: str = "") -> KeyboardInterrupt:
    """A ``KeyboardInterrupt`` carrying the partial ``result`` (``err.result``) and saying what was kept.

    Parameters
    ----------
    result : object
        The partial result (a Trajectory with status ``interrupted``, a SweepResult, a
        FitResult with ``meta["interrupted"]``), or ``None`` when nothing was computed.
    message : str
        What was kept.

    Returns
    -------
    KeyboardInterrupt
        To be raised.
    """
    err = KeyboardInterrupt(message or "interrupted (Ctrl-C); the partial result is in err.result")
    err.result = result
    return err


class _State:
    depth = 0            # nesting of deferred() blocks in the main thread
    flag = False         # SIGINT seen inside the outermost block
    previous = None      # the handler to restore


def _handler(signum, frame):
    if _State.flag:      # second Ctrl-C: the user insists; behave as Python would
        signal.signal(signal.SIGINT, _State.previous or signal.default_int_handler)
        raise KeyboardInterrupt
    _State.flag = True


@contextlib.contextmanager
def deferred():
    """Within this block, SIGINT sets a flag (read with :func:`requested`) instead of raising.

    Nested blocks share the outermost block's flag; the handler is installed only in the
    main thread and only over Python's default handler (``signal.default_int_handler``).
    """
    install = (threading.current_thread() is threading.main_thread()
               and (_State.depth > 0 or signal.getsignal(signal.SIGINT) is signal.default_int_handler))
    if not install:
        yield
        return
    if _State.depth == 0:
        _State.previous = signal.getsignal(signal.SIGINT)
        _State.flag = False
        signal.signal(signal.SIGINT, _handler)
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            signal.signal(signal.SIGINT, _State.previous)
            _State.flag = False


def requested() -> bool:
    """Whether Ctrl-C was pressed inside the current :func:`deferred` block."""
    return _State.flag


def check_on_interrupt(value) -> str:
    """``on_interrupt`` checked: ``"raise"`` or ``"return"``."""
    if value not in ON_INTERRUPT:
        raise ValueError(f"on_interrupt must be 'raise' (Ctrl-C raises KeyboardInterrupt with the partial result in "
                         f"its .result) or 'return' (the partial result is returned), got {value!r}.")
    return value


def finish(result, was_interrupted: bool, on_interrupt: str, message: str = ""):
    """Return ``result``, or raise ``KeyboardInterrupt`` carrying it when interrupted and ``on_interrupt="raise"``."""
    if was_interrupted and on_interrupt == "raise":
        raise interrupted(result, message)
    return result
