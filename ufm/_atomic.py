"""Files written whole or not at all: what every ``save`` of ufm, the sweep cache and the CLI's outputs use.

A file is never written in place. :func:`write_atomically` writes a temporary file in the
target's folder, flushes it to the disk (``fsync``), renames it over the target
(``os.replace``, atomic within one folder) and flushes the folder. Whatever stops the write
(an exception, Ctrl-C, SIGTERM, ``kill -9``, a full disk), the target is then either the
complete old file or the complete new one. A process killed outright may leave its
temporary file behind: a hidden ``.<name>.<random>.tmp`` beside the target, never read by
ufm, safe to delete.

A symbolic link at the target is replaced by the new file, not written through: the file
it pointed to is left as it was (writing through a link would change a file elsewhere,
perhaps the only copy of an earlier run, under a name the caller did not give).
"""

from __future__ import annotations

import os
import secrets

import numpy as np

__all__ = ["write_atomically", "write_npz"]


def write_atomically(path, write) -> str:
    """Write the file ``path`` through ``write(fh)``, so that it is always either the old file or the new one, whole.

    Parameters
    ----------
    path : str or path-like
        The target. An existing file there is replaced only once the new one is
        completely on the disk; a symbolic link there is replaced itself (its target
        is not touched).
    write : callable
        ``write(fh)`` writes the whole content to ``fh``, an empty binary file open for
        reading and writing (``np.savez(fh, ...)``, ``fig.savefig(fh, format="png")``,
        ``h5py.File(fh, "w")``, ``fh.write(data)``).

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        When the system refuses the file (a folder that takes no files, such as
        ``/proc``; no permission; a read-only or full disk), naming ``path``, the
        system's reason and saying that a file already at ``path`` is unchanged.
        Anything ``write`` raises (and ``KeyboardInterrupt``) propagates the same way:
        the temporary file is removed and the target is left as it was.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        raise _refused(path, err) from None
    try:
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _refused(path, err) from None
        raise
    _sync_folder(folder)
    return path


def write_npz(path, arrays: dict, *, compressed: bool = True) -> str:
    """Write ``arrays`` (name -> array) to the ``.npz`` file ``path`` with :func:`write_atomically`.

    Parameters
    ----------
    path : str or path-like
        The target, written as given (no extension is appended).
    arrays : dict
        Entry name -> array (no object arrays: files are read with ``allow_pickle=False``).
    compressed : bool
        ``np.savez_compressed`` (default) or ``np.savez``.

    Returns
    -------
    str
        ``path``.
    """
    save = np.savez_compressed if compressed else np.savez
    return write_atomically(path, lambda fh: save(fh, **arrays))


def _refused(path: str, err: OSError) -> ValueError:
    reason = err.strerror or str(err) or type(err).__name__
    return ValueError(f"cannot write {path}: {reason}; a file already there is unchanged. Choose a folder that "
                      f"takes new files and has free space.")


def _sync_folder(folder: str) -> None:
    """Flush the folder entry of the renamed file to the disk (not every file system allows it: then skipped)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
