"""The one progress display of ufm: a tqdm bar when tqdm is installed, plain lines on stderr otherwise.

Every long entry point (``ufm.simulate``, ``ufm.solve(method="prox")``, ``ufm.fit``,
``ufm.sweep``, ``ufm.bridge.train_network``, ``ufm demo``) reports through
:class:`Progress`; nothing it shows goes to standard output, which belongs to the
results of the command line. A disabled display does nothing.

Every entry point takes ``progress=`` with the same meaning and the same default:
``"auto"`` shows the display once the work has run :data:`AUTO_DELAY` seconds (a call
that finishes sooner prints nothing), ``True`` from the start, ``False`` never.

The protocol: ``Progress(progress, total, desc, unit=...)``, then :meth:`Progress.update`
with the amount done so far (absolute, so a caller that jumps ahead or repeats a
count stays right), :meth:`Progress.note` for a status line, :meth:`Progress.close`
(or a ``with`` block). Without tqdm a line is written at every further 10 % (and at
the end); notes are written at most every ``every`` seconds unless forced.
"""

from __future__ import annotations

import math
import sys
import time

__all__ = ["Progress", "AUTO_DELAY", "check_progress"]

#: Seconds of work after which ``progress="auto"`` starts showing.
AUTO_DELAY = 2.0


def check_progress(progress):
    """``progress`` checked: ``"auto"``, True or False (anything else is a ValueError naming the choices).

    Parameters
    ----------
    progress : {"auto", True, False}
        The value a caller passed.

    Returns
    -------
    str or bool
        The same value.
    """
    if isinstance(progress, str):
        if progress == "auto":
            return progress
    elif isinstance(progress, (bool, int)) and progress in (0, 1):
        return bool(progress)
    raise ValueError(f"progress must be 'auto' (shown after {AUTO_DELAY:g} s of work), True (from the start) or "
                     f"False (never), got {progress!r}.")


class Progress:
    """Progress of one computation of ``total`` units (``None``: unknown, notes only).

    Parameters
    ----------
    enabled : {"auto", True, False}
        ``"auto"``: show once the work has run :data:`AUTO_DELAY` seconds; ``True``: from the
        start; ``False``: nothing.
    total : int or None
        Units of work (steps, runs, iterations); ``None`` when unknown.
    desc : str
        What runs (the prefix of every line, e.g. ``"ufm.simulate (gd)"``).
    unit : str
        Name of one unit, for the bar.
    initial : int
        Units already done (e.g. runs loaded from a cache).
    every : float
        Seconds between two notes without tqdm (notes with ``force=True`` always show).
    """

    def __init__(self, enabled: bool, total, desc: str, *, unit: str = "step", initial: int = 0,
                 every: float = 2.0):
        enabled = check_progress(enabled)
        self.delay = AUTO_DELAY if enabled == "auto" else 0.0
        self.enabled, self.total, self.desc, self.unit = bool(enabled), total, desc, unit
        self.done, self.every, self.bar = int(initial), float(every), None
        self.t0, self.last_pct, self.last_note = time.perf_counter(), -1, -math.inf
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if total is not None and initial:
                self._line()
            return
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                        delay=self.delay)

    def _waiting(self) -> bool:
        """True while an ``"auto"`` display is still within its delay (nothing shown yet)."""
        return self.delay > 0 and time.perf_counter() - self.t0 < self.delay

    def _line(self) -> None:
        if self._waiting():
            return
        pct = int(100 * self.done / max(self.total, 1))
        if pct >= self.last_pct + 10 or self.done == self.total:
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({pct}%)", file=sys.stderr, flush=True)
            self.last_pct = pct

    def update(self, done: int) -> None:
        """``done`` units are finished (counted from the start, not since the last call)."""
        if not self.enabled:
            return
        done = int(done)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.done = done
        elif done != self.done or self.last_pct < 0:
            self.done = done
            if self.total is not None:
                self._line()

    def advance(self, n: int = 1) -> None:
        """``n`` more units are finished."""
        self.update(self.done + n)

    def note(self, message: str, force: bool = False) -> None:
        """A status line (``"desc: message (elapsed s)"``), at most every ``every`` seconds unless ``force``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._waiting():          # "auto" within its delay: a short call prints nothing at all
            return
        if not force and now - self.last_note < self.every:
            return
        self.last_note = now
        line = f"{self.desc}: {message} ({now - self.t0:.1f} s)"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """End the display (the bar is closed; nothing more is written)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
