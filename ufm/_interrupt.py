"""Ctrl-C (SIGINT) during a long computation: stop at a safe point, keep what was computed.

Every long-running entry point (``ufm.simulate``, ``ufm.sweep``, ``ufm.fit``, ``ufm sweep``'s
:func:`~ufm._cli_sweep.run_config`) runs one call in one *protected region*
(:func:`protected`), from its first check to its return: reading the arguments, the
computation, building the result (hashing included) and handing it back. There, in the main
thread, SIGINT does not raise at a random bytecode (or, worse, while a compiled kernel runs,
where Python cannot handle it): it only sets a flag. The computation looks at the flag
between chunks of bounded work (:func:`requested`), stops, and assembles its partial result.
A second Ctrl-C while the flag is set restores Python's own behaviour and raises
``KeyboardInterrupt`` at once; the entry point then keeps what it can and raises it (even
with ``on_interrupt="return"``: the user insisted).

A Ctrl-C seen inside the region is always honoured when the region closes
(:meth:`Protected.finish`): a run that finished anyway (the signal came after its last
check) is handed back marked interrupted, with every record, never as silently
``completed``. What the user gets is decided by ``on_interrupt``:

* ``"raise"`` (the default): ``KeyboardInterrupt`` is raised, carrying the result in its
  ``result`` attribute (:func:`interrupted`). A script that does not catch it stops where
  the user pressed Ctrl-C and exits as after any Ctrl-C (killed by SIGINT, status 130 in
  a shell, so shell loops and ``make`` stop too), as with scipy or tqdm, which let
  ``KeyboardInterrupt`` through; ``except KeyboardInterrupt as err: err.result`` recovers
  the work. (A subclass would not do: Python exits with status 1, not by SIGINT, when the
  uncaught exception is not exactly ``KeyboardInterrupt``.)
* ``"return"``: the result is returned, marked interrupted (``status`` ``"interrupted"``;
  also ``meta["interrupted"]`` for a fit), and the program goes on.

Every ``KeyboardInterrupt`` that leaves an entry point carries ``result``: the partial
result, or ``None`` with a message saying in which stage the call was and that nothing was
kept (a Ctrl-C before anything was computed; then there is nothing to return, so it is
raised even with ``on_interrupt="return"``).

Code that may be abandoned anywhere (waiting for a sweep's workers, running a user's task)
runs inside :func:`raising`: there the first Ctrl-C raises ``KeyboardInterrupt`` at once,
and the caller catches it at its boundary. A protected region opened inside it (a
``ufm.simulate`` run as a sweep's task) defers again.

Outside the main thread (Dask workers, joblib threads) or when someone else has installed
a SIGINT handler, nothing is installed and a ``KeyboardInterrupt`` raised in Python code is
caught around the chunks instead (same partial result); a thread's computation also stops
when the main thread's region has seen a Ctrl-C (the flag is one for the process).

Stages
------
Each entry point calls :func:`stage` as it enters each stage of :data:`STAGES`. It does
nothing; tests replace it (``monkeypatch.setattr(ufm._interrupt, "stage", hook)``) to
deliver a Ctrl-C at a chosen boundary deterministically: ``hook`` calls the installed SIGINT
handler, ``signal.getsignal(signal.SIGINT)(signal.SIGINT, None)``, what the signal itself
runs (once: the flag is set; twice: the second call raises, as a second Ctrl-C does), or
raises ``KeyboardInterrupt`` itself. The stage names are stable: tests and the fit's code
use them.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["STAGES", "Protected", "Region", "check_on_interrupt", "deferred", "interrupted", "protected", "raising",
           "requested", "stage"]

ON_INTERRUPT = ("raise", "return")

_NAMES = {"simulate": "ufm.simulate", "sweep": "ufm.sweep", "fit": "ufm.fit", "sweep_config": "ufm sweep"}

#: The stages of each entry point, in the order it enters them, with what it does there
#: (the text goes into the message of a ``KeyboardInterrupt`` that kept nothing).
STAGES = {
    "simulate": {
        "checks": "checking the arguments and the memory estimate, before anything was computed",
        "initial_states": "drawing the initial states, before any step ran",
        "run": "running the steps",
        "result": "building the Trajectory",
        "return": "handing back the Trajectory",
    },
    "sweep": {
        "plan": "checking the grid and the arguments, before any run",
        "cache": "loading the runs an earlier call cached",
        "run": "running the grid points",
        "result": "building the SweepResult",
        "return": "handing back the SweepResult",
    },
    "fit": {
        "checks": "checking the arguments, before anything was computed",
        "read": "reading and checking the Grams",
        "observe": "centring the Grams and computing the observed curves",
        "static": "fitting the static decomposition",
        "input_coupled": "fitting the input-coupled model (M2)",
        "feature_penalty": "fitting the feature-penalty model (M2-H)",
        "anchored": "fitting the anchored model (M1)",
        "judge": "judging the models",
        "intervals": "bootstrapping the quoted model's intervals and events",
        "result": "building the FitResult",
        "return": "handing back the FitResult",
    },
    "sweep_config": {
        "config": "reading the TOML configuration, before any run",
        "sweep": "running the sweep",
        "save": "writing result.npz",
        "figure": "drawing the phase diagram",
        "return": "handing back the result",
    },
}


def stage(entry: str, name: str) -> None:
    """Called by entry point ``entry`` as it enters stage ``name`` (a key of ``STAGES[entry]``); does nothing.

    Parameters
    ----------
    entry : str
        A key of :data:`STAGES` (``"simulate"``, ``"sweep"``, ``"fit"``, ``"sweep_config"``).
    name : str
        The stage entered.
    """


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
    insisted = False     # ... and pressed again: Python's handler is back
    previous = None      # the handler to restore
    modes = []           # "defer" or "raise" for each open block of the main thread, innermost last


def _handler(signum, frame):
    if _State.flag:      # second Ctrl-C: the user insists; behave as Python would
        _State.insisted = True
        signal.signal(signal.SIGINT, _State.previous or signal.default_int_handler)
        raise KeyboardInterrupt
    _State.flag = True
    if _State.modes and _State.modes[-1] == "raise":
        raise KeyboardInterrupt


class Region:
    """What a :func:`deferred` block saw, set as it closes: ``seen``, whether Ctrl-C was pressed in it, and
    ``insisted``, whether it was pressed again (the second press raised ``KeyboardInterrupt``)."""

    seen = False
    insisted = False


def _installable() -> bool:
    return (threading.current_thread() is threading.main_thread()
            and (_State.depth > 0 or signal.getsignal(signal.SIGINT) is signal.default_int_handler))


@contextlib.contextmanager
def deferred():
    """Within this block, SIGINT sets a flag (read with :func:`requested`) instead of raising.

    Nested blocks share the outermost block's flag; the handler is installed only in the
    main thread and only over Python's default handler (``signal.default_int_handler``).
    Yields a :class:`Region` whose ``seen`` says, once the block has closed, whether
    Ctrl-C was pressed in it (read after Python's handler is back, so no signal falls
    between the two).
    """
    region = Region()
    if not _installable():
        try:
            yield region
        finally:
            region.seen, region.insisted = _State.flag, _State.insisted
        return
    if _State.depth == 0:
        _State.previous = signal.getsignal(signal.SIGINT)
        _State.flag = _State.insisted = False
        signal.signal(signal.SIGINT, _handler)
    _State.depth += 1
    _State.modes.append("defer")
    try:
        yield region
    finally:
        _State.modes.pop()
        _State.depth -= 1
        if _State.depth > 0:
            region.seen, region.insisted = _State.flag, _State.insisted
        else:
            try:
                signal.signal(signal.SIGINT, _State.previous)
            finally:
                region.seen, region.insisted = _State.flag, _State.insisted
                _State.flag = _State.insisted = False


@contextlib.contextmanager
def raising():
    """Within this block (inside a :func:`deferred` one), the first Ctrl-C raises ``KeyboardInterrupt`` at once.

    For code that may be abandoned anywhere and is caught at its boundary: waiting for a
    sweep's workers, running a user's task. A Ctrl-C already seen raises on entry. A
    :func:`deferred` block opened inside defers again. Outside a deferred block (or outside
    the main thread) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread() or _State.depth == 0:
        yield
        return
    _State.modes.append("raise")
    try:
        if _State.flag:
            raise KeyboardInterrupt
        yield
    finally:
        _State.modes.pop()


def requested() -> bool:
    """Whether Ctrl-C was pressed inside the current :func:`deferred` block."""
    return _State.flag


def check_on_interrupt(value) -> str:
    """``on_interrupt`` checked: ``"raise"`` or ``"return"``."""
    if value not in ON_INTERRUPT:
        raise ValueError(f"on_interrupt must be 'raise' (Ctrl-C raises KeyboardInterrupt with the partial result in "
                         f"its .result) or 'return' (the partial result is returned), got {value!r}.")
    return value


class Protected:
    """The protected region of one call of an entry point (see the module docstring); made by :func:`protected`.

    Use it as a context manager around the whole call and end the call with
    ``return region.finish(result, ...)``. Inside, :meth:`stage` marks the stages of
    :data:`STAGES`. On the way out, a ``KeyboardInterrupt`` without a result gets
    ``result = None`` and a message naming the stage; an exception raised after a Ctrl-C
    was seen becomes ``KeyboardInterrupt`` (chained to it), so the Ctrl-C is not lost to
    a caller that catches the exception.
    """

    def __init__(self, entry: str, on_interrupt: str):
        self.entry = entry
        self.on_interrupt = check_on_interrupt(on_interrupt)
        self.at = None
        self._block = None
        self._region = None

    def __enter__(self):
        self._block = deferred()
        self._region = self._block.__enter__()
        return self

    def stage(self, name: str) -> None:
        """Enter stage ``name`` of this entry point (calls the :func:`stage` hook)."""
        self.at = name
        stage(self.entry, name)

    def _close(self) -> tuple[bool, bool]:
        """Close the region (Python's handler is back from here on): whether Ctrl-C was pressed inside it, and
        whether it was pressed twice."""
        block, self._block = self._block, None
        if block is None:
            return False, False
        try:
            block.__exit__(None, None, None)
        except KeyboardInterrupt:        # Ctrl-C just as Python's handler came back: pressed after the first
            return True, True
        return self._region.seen, self._region.insisted

    def _where(self) -> str:
        return STAGES.get(self.entry, {}).get(self.at, f"in stage {self.at!r}")

    def finish(self, result, was_interrupted: bool, mark=None, message: str | None = None):
        """Close the region and hand back ``result``: returned, or raised in a ``KeyboardInterrupt``.

        Parameters
        ----------
        result : object
            The complete or partial result.
        was_interrupted : bool
            Whether the computation itself stopped for Ctrl-C (``result`` is partial).
        mark : callable, optional
            ``mark(result)``: the finished ``result`` marked interrupted, for a Ctrl-C
            that came after the computation's last check (nothing is missing from it).
        message : str, optional
            The ``KeyboardInterrupt``'s message (default: ``result.message``).

        Returns
        -------
        object
            ``result`` (marked when a Ctrl-C was seen), unless it is raised: when
            interrupted and ``on_interrupt="raise"``, or after a second Ctrl-C.
        """
        again = False
        try:
            self.stage("return")
        except KeyboardInterrupt:        # a second Ctrl-C as the result is handed back
            again = True
        seen, insisted = self._close()
        seen, again = seen or again, again or insisted
        try:
            if seen and not was_interrupted:
                if mark is not None:
                    result = mark(result)
                was_interrupted = True
            if was_interrupted and (self.on_interrupt == "raise" or again):
                raise interrupted(result, message if message is not None else getattr(result, "message", ""))
        except KeyboardInterrupt as err:  # also a Ctrl-C after the region closed, while this ran
            if not hasattr(err, "result"):
                err = interrupted(result, message if message is not None else getattr(result, "message", ""))
            raise err from None
        return result

    def __exit__(self, kind, err, tb):
        seen, _ = self._close()
        if kind is None:
            return False
        if issubclass(kind, KeyboardInterrupt) and not hasattr(err, "result"):
            raise interrupted(None, f"{_NAMES.get(self.entry, self.entry)}: interrupted (Ctrl-C) while "
                                    f"{self._where()}; no result was kept.") from None
        if seen and issubclass(kind, Exception):
            raise interrupted(None, f"{_NAMES.get(self.entry, self.entry)}: interrupted (Ctrl-C) while "
                                    f"{self._where()}, where it also failed ({kind.__name__}: {err}); no result "
                                    f"was kept.") from err
        return False


def protected(entry: str, on_interrupt: str) -> Protected:
    """The protected region of one call of entry point ``entry`` (a key of :data:`STAGES`).

    Parameters
    ----------
    entry : str
        ``"simulate"``, ``"sweep"``, ``"fit"`` or ``"sweep_config"``.
    on_interrupt : {"raise", "return"}
        What the call does with a Ctrl-C (checked here).

    Returns
    -------
    Protected
        To be used as a context manager.
    """
    return Protected(entry, on_interrupt)
