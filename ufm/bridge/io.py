"""The bridge format: record features during training, save and load them (THEORY §8.6).

The format is :class:`ufm.results.Run`: per recorded training step, the
class-mean Gram ``G_t = M_t^T M_t`` of the penultimate features (``M_t`` is
d x K, one column per class, **uncentred** and unnormalized; fitting centres
and normalizes, THEORY §8.6 step 1), plus optionally the class means, the
classifier, within-class traces and the loss.

Files
-----
``.npz`` (default, numpy only)
    Written by :meth:`Run.save` / :func:`save_run`: one entry per array field
    and a JSON ``__header__`` (file schema, result type, ``name``, ``meta``
    with the bridge schema version and a SHA-256 content hash). Loaded with
    ``allow_pickle=False``: pickled or object entries are refused, never run.
``.safetensors`` (needs ``pip install 'ufm[io]'``)
    One tensor per array field; the same JSON header in the safetensors
    metadata under the key ``"ufm"``.
``.h5`` / ``.hdf5`` (needs ``pip install 'ufm[io]'``)
    One dataset per array field at the file root or under a group
    (``group=``); the same JSON header in the node's ``attrs["ufm"]``.

:func:`load_run` also reads files that a user wrote without ufm (no header):
arrays named as the fields of :class:`Run` (``steps``, ``grams``, ``labels``,
``counts``, ``attributes``, ``means``, ``W``, ``within``, ``loss``), plus an
optional string ``name`` and a JSON-object string ``meta`` (an ``.npz`` entry,
a safetensors metadata key or an HDF5 attribute). See :func:`load_run` for the
defaults it fills in.

:class:`Exporter` builds a ``Run`` from a training loop without importing
torch, either by calling ``exporter.record(step, features, labels, W=...)``
or through a forward hook (:meth:`Exporter.attach` and
:meth:`Exporter.capture`).

Conventions: features are rows (``features[i]`` is example ``i``), class means
are columns of ``M`` (d x K) in the order of ``labels``, Grams are
``M^T M`` (K x K), classifier rows are output labels (``W`` is K x d).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os

import numpy as np

from .._atomic import write_atomically, write_npz
from .._checks import check_int
from .._simulate import record_grid
from ..results import (RUN_ARRAYS, RUN_INT_ARRAYS, RUN_SCHEMA, Run, check_run_file, check_save_path, jsonable,
                       run_array, run_file)

__all__ = ["RUN_SCHEMA", "Capture", "Exporter", "Run", "load_run", "log_steps", "save_run"]

_FIELDS = RUN_ARRAYS                       # array fields, in Run's order
_INT_FIELDS = RUN_INT_ARRAYS
_STRING_FIELDS = ("name", "meta")          # scalar fields a foreign file may carry as strings
_HEADER_KEY = "__header__"                 # npz entry holding the JSON header
_META_KEY = "ufm"                          # safetensors metadata key / HDF5 attribute holding it
_EXTENSIONS = {".npz": "npz", ".safetensors": "safetensors", ".h5": "hdf5", ".hdf5": "hdf5"}
# safetensors dtypes numpy reads exactly; BF16 / F8 have no numpy dtype, BOOL is not a number
_SAFETENSORS_OK = {"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8"}


def log_steps(total: int, n_records: int = 60) -> np.ndarray:
    """Record steps for a run of ``total`` steps: 0, the last step, and ``n_records`` log-spaced steps.

    The same grid as :func:`ufm.simulate`'s ``grid="log"`` (rounded, duplicates removed).

    Parameters
    ----------
    total : int
        Steps of the run.
    n_records : int
        Log-spaced steps between 1 and ``total``.

    Returns
    -------
    ndarray of int
        The steps, increasing.
    """
    return record_grid(total, n_records, "log")


# -- small helpers ------------------------------------------------------------------------------
def as_numpy(x, name: str) -> np.ndarray:
    """A float64 copy of an array-like, torch tensors included (via ``.detach().cpu()``), without importing torch."""
    x = _to_host(x)
    try:
        arr = np.array(x, dtype=np.float64)          # always a copy: callers may reuse their buffers
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array (numpy array, list or torch tensor), got "
                         f"{type(x).__name__} ({err}).") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN/inf entries; the run diverged or the features were not computed "
                         f"(lower the learning rate, or stop recording before the divergence).")
    return arr


def _to_host(x):
    """Torch tensors (duck-typed) as numpy arrays; anything else unchanged."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        try:
            x = x.numpy()
        except TypeError:          # bfloat16 and other dtypes numpy lacks: go through float32
            x = x.float().numpy()
    return x


def _as_label_ids(y, name: str) -> np.ndarray:
    """Integer label ids (an int64 copy); integral floats are accepted, fractions refused."""
    arr = np.array(_to_host(y))
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer label ids, got dtype {arr.dtype}; pass class ids, "
                         f"not one-hot rows or probabilities.")
    return arr.astype(np.int64)


def _check_position(position):
    if position is None:
        return None
    if isinstance(position, (bool, np.bool_)) or not isinstance(position, (int, np.integer)):
        raise ValueError(f"position must be an integer token index (e.g. -1 for the last token), got {position!r}.")
    return int(position)


def _select_position(X, position, where: str):
    """Rows of ``X`` (n, d), taking the token at ``position`` of 3-D (n, seq, d) features."""
    shape = tuple(getattr(X, "shape", np.shape(X)))
    ndim = len(shape)
    if ndim == 3:
        if position is None:
            raise ValueError(f"{where} are 3-D {shape} (batch, seq, d); choose the token with position= "
                             f"(e.g. position=-1 for the last token of every sequence).")
        if not -shape[1] <= position < shape[1]:
            raise ValueError(f"position={position} is outside the sequence length {shape[1]} of the {where} {shape}.")
        return X[:, position, :]
    if position is not None:
        raise ValueError(f"position={position} was given but the {where} are {ndim}-D {shape}; position only "
                         f"applies to (batch, seq, d) features: drop it.")
    return X


def _optional(module: str, ext: str):
    """Import an optional reader/writer lazily, with the install hint when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{ext} files need the optional package {module.split('.')[0]!r}: "
                          f"pip install 'ufm[io]'") from None


def file_format(path: str, *, default_npz: bool = False) -> str:
    """``"npz"``, ``"safetensors"`` or ``"hdf5"``, by the extension of ``path`` (none: ``"npz"`` with
    ``default_npz``); a ValueError listing the known extensions otherwise."""
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    if default_npz and ext == "":
        return "npz"
    raise ValueError(f"{path}: unknown extension {ext or '(none)'!r}; bridge runs are read and written as "
                     f"{', '.join(_EXTENSIONS)} (convert other formats, e.g. torch .pt, with "
                     f"Exporter.record or by saving the arrays with np.savez).")


def _file_error(path: str, field: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{path}: field {field!r} {problem}; {fix}.")


# -- saving -------------------------------------------------------------------------------------
def save_run(run: Run, path: str | os.PathLike, *, group: str | None = None) -> str:
    """Write a bridge run to ``.npz`` (default), ``.safetensors`` or ``.h5`` / ``.hdf5``, by extension.

    Every format holds the same arrays (float64 / int64, one per non-``None``
    field of :class:`~ufm.results.Run`) and the same JSON header (file schema,
    type, ``name``, ``meta`` with the bridge schema version and the content
    hash), so :func:`load_run` gives back an equal ``Run`` and checks the hash.

    Parameters
    ----------
    run : Run
        The run to write.
    path : str or path-like
        Target file. No extension means ``.npz`` (appended, as :meth:`Run.save`
        does); an unknown extension is a ``ValueError``. ``.npz`` and
        ``.safetensors`` files, and ``.h5`` files written without ``group``,
        are replaced atomically (written to a temporary file beside it, flushed
        to the disk, then renamed: :func:`ufm._atomic.write_atomically`), so an
        interrupted save never leaves a half-written run behind nor destroys the
        file that was there; a symbolic link at ``path`` is replaced, not
        written through. A ``group`` is added to the existing file in place.
    group : str, optional
        HDF5 only: write the datasets under this group of ``path`` (created;
        the file is opened for appending, so other groups are kept). A group
        that already exists is an error.

    Returns
    -------
    str
        The path written.

    Notes
    -----
    ``.safetensors`` and ``.h5`` need ``pip install 'ufm[io]'``.

    References
    ----------
    THEORY.md §8.6 (Gram-matrix bridge).
    """
    if not isinstance(run, Run):
        raise ValueError(f"run must be a ufm.bridge.Run (e.g. Exporter.run()), got {type(run).__name__}.")
    path = os.fspath(path)
    fmt = file_format(path, default_npz=True)
    if fmt == "npz" and not path.lower().endswith(".npz"):
        path += ".npz"
    check_save_path(path if fmt == "npz" else path + ".npz")     # a folder or an unwritable place: refused now
    if group is not None and fmt != "hdf5":
        raise ValueError(f"group={group!r} applies to HDF5 files only; drop it or save to a .h5 path.")
    header, arrays = run_file(run)
    header = json.dumps(header)
    if fmt == "hdf5" and group is not None:
        _write_h5(path, arrays, header, group)
        return path
    if fmt == "npz":
        return write_npz(path, {_HEADER_KEY: np.array(header), **arrays})
    if fmt == "safetensors":
        st = _optional("safetensors.numpy", ".safetensors")
        blob = st.save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata={_META_KEY: header})
        return write_atomically(path, lambda fh: fh.write(blob))
    _optional("h5py", ".h5")
    return write_atomically(path, lambda fh: _write_h5(fh, arrays, header, None))


def _write_h5(path, arrays: dict, header: str, group: str | None):
    """Write the datasets to ``path`` (a file name, or a binary file opened for writing) or to its ``group``."""
    h5py = _optional("h5py", ".h5")
    try:
        f = h5py.File(path, "w" if group is None else "a")
    except OSError as err:
        raise ValueError(f"{path}: cannot be opened for writing as HDF5 ({err}); check the folder's permissions, "
                         f"or pass a new file (an existing file must be a valid HDF5 file to add a group).") from None
    with f:
        if group is not None:
            if group in f:
                raise ValueError(f"{path}: group {group!r} already exists; choose another group or delete it "
                                 f"(del h5py.File(path, 'a')[{group!r}]).")
            node = f.create_group(group)
        else:
            node = f
        for name, arr in arrays.items():
            big = arr.ndim > 0 and arr.size > 1024
            node.create_dataset(name, data=arr, compression="gzip" if big else None)
        node.attrs[_META_KEY] = header


# -- loading ------------------------------------------------------------------------------------
def load_run(path: str | os.PathLike, *, group: str | None = None) -> Run:
    """Load a bridge run from ``.npz``, ``.safetensors`` or ``.h5`` / ``.hdf5`` (by extension).

    Files written by ufm (:func:`save_run`, :meth:`Run.save`,
    :meth:`Exporter.save`) carry a JSON header; their file schema, result type
    and bridge schema version are checked, and their content hash must match
    the arrays (so an edited or corrupted file is refused).

    Files written without ufm (no header) hold arrays named as the fields of
    :class:`~ufm.results.Run`, e.g.
    ``np.savez(path, steps=steps, means=means, labels=labels)``:

    * ``steps`` (T,) is required;
    * ``grams`` (T, K, K) is required **unless** ``means`` (T, d, K) is given,
      in which case ``grams = means^T means`` per step (uncentred class means as
      columns, THEORY §8.6);
    * ``labels`` defaults to ``arange(K)`` **only when absent**;
    * ``counts`` defaults to ones (every class mean over one example, i.e.
      equal weights) **only when absent**;
    * ``attributes``, ``W`` (T, K, d), ``within`` (T, K), ``loss`` (T,) are optional;
    * an optional ``name`` string and ``meta`` JSON-object string (npz entry,
      safetensors metadata key or HDF5 attribute); other safetensors metadata
      and HDF5 attributes are ignored, and HDF5 subgroups are not read
      (pass ``group=`` to read one).

    Every default filled in is listed in ``run.meta["defaults"]``. Any other
    array name is an error naming it and the known fields.

    Parameters
    ----------
    path : str or path-like
        The file; its extension selects the reader.
    group : str, optional
        HDF5 only: the group holding the datasets (default: the file root).

    Returns
    -------
    Run
        The validated run (read-only arrays).

    Raises
    ------
    ValueError
        Naming the file, the field and the fix, for: a missing file, an
        unknown extension, a truncated or corrupted file, pickled or object
        entries, a wrong schema or result type, a content-hash mismatch,
        unknown or missing fields, non-numeric dtypes, wrong shapes, NaN/inf,
        non-symmetric or non-PSD Grams, duplicate labels, steps not strictly
        increasing (the checks of :class:`~ufm.results.Run`).
    ImportError
        For ``.safetensors`` / ``.h5`` without ``pip install 'ufm[io]'``.

    References
    ----------
    THEORY.md §8.6 (Gram-matrix bridge).
    """
    path = os.fspath(path)
    fmt = file_format(path)
    if group is not None and fmt != "hdf5":
        raise ValueError(f"group={group!r} applies to HDF5 files only; drop it for {path}.")
    if not os.path.exists(path):
        raise ValueError(f"{path}: file does not exist; check the path (working directory: {os.getcwd()}).")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; pass the run file inside it.")
    if fmt == "npz":
        arrays, header, strings = _read_npz(path)
    elif fmt == "safetensors":
        arrays, header, strings = _read_safetensors(path)
    else:
        arrays, header, strings = _read_h5(path, group)
        if group is not None:
            path = f"{path}[{group}]"
    return _build_run(path, arrays, header, strings)


def _corrupt(path: str, what: str, err: Exception) -> ValueError:
    return ValueError(f"{path}: {what} ({type(err).__name__}: {err}); the file is truncated or corrupted: "
                      f"write it again (e.g. with ufm.bridge.io.save_run).")


def _read_npz(path: str):
    import zipfile

    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "pickle" in str(err):           # neither zip nor .npy magic: numpy would unpickle it
            with open(path, "rb") as f:
                start = f.read(2)
            if start[:1] == b"\x80":
                raise ValueError(f"{path} is not an .npz archive but pickled data, which ufm never loads (a "
                                 f"pickle can run code); save numeric arrays with np.savez.") from None
            raise ValueError(f"{path} is not an .npz (zip) archive (it starts with {start!r}); the file is "
                             f"corrupted or of another format: write it again with save_run or np.savez.") from None
        raise _corrupt(path, "cannot be read as an .npz archive", err) from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise _corrupt(path, "is not a valid .npz (zip) archive", err) from None
    except Exception as err:  # noqa: BLE001 - numpy raises many types on garbage; all mean "corrupt"
        raise _corrupt(path, "cannot be read as an .npz archive", err) from None
    if isinstance(data, np.ndarray):
        raise ValueError(f"{path} holds a single .npy array, not an .npz archive of named fields; save with "
                         f"np.savez(path, steps=..., grams=..., ...).")
    arrays, strings, header = {}, {}, None
    with data:
        for key in data.files:
            try:
                arr = data[key]
            except ValueError as err:
                if "Object arrays" in str(err) or "pickle" in str(err):
                    raise _file_error(path, key, "is an object array (Python objects, stored as a pickle), which "
                                      "ufm never loads", "store a numeric array, e.g. np.asarray(x, dtype=float)"
                                      ) from None
                raise _corrupt(path, f"entry {key!r} cannot be read", err) from None
            except Exception as err:  # noqa: BLE001 - zlib / CRC / header parse errors
                raise _corrupt(path, f"entry {key!r} cannot be read", err) from None
            if not isinstance(arr, np.ndarray):
                raise _file_error(path, key, "is not a numpy array (a raw file inside the zip)",
                                  "save the arrays with np.savez")
            if key == _HEADER_KEY:
                header = _string_entry(path, key, arr)
            elif key in _STRING_FIELDS and arr.dtype.kind in "US":
                strings[key] = _string_entry(path, key, arr)
            else:
                arrays[key] = arr
    return arrays, header, strings


def _string_entry(path, key, arr) -> str:
    if arr.ndim != 0 or arr.dtype.kind not in "US":
        raise _file_error(path, key, f"must be a single string, got dtype {arr.dtype}, shape {arr.shape}",
                          "store it as np.array('text')")
    value = arr.item()
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_safetensors(path: str):
    safetensors = _optional("safetensors", ".safetensors")
    arrays = {}
    try:
        with safetensors.safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                dtype = f.get_slice(key).get_dtype()
                if dtype not in _SAFETENSORS_OK:
                    raise _file_error(path, key, f"has safetensors dtype {dtype}, which is not a number type "
                                      f"numpy reads exactly", "save float32/float64 (or integer) tensors, e.g. "
                                      "tensor.double() / tensor.long()")
                arrays[key] = f.get_tensor(key)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ... all mean "unreadable"
        raise _corrupt(path, "cannot be read as a .safetensors file", err) from None
    header = metadata.pop(_META_KEY, None)
    strings = {k: metadata[k] for k in _STRING_FIELDS if k in metadata}
    return arrays, header, strings


def _read_h5(path: str, group: str | None):
    h5py = _optional("h5py", ".h5")
    arrays, strings = {}, {}
    try:
        f = h5py.File(path, "r")
    except Exception as err:  # noqa: BLE001 - OSError for truncated / non-HDF5 files
        raise _corrupt(path, "cannot be opened as an HDF5 file", err) from None
    with f:
        if group is None:
            node = f
        else:
            if group not in f or not isinstance(f[group], h5py.Group):
                found = sorted(k for k in f if isinstance(f[k], h5py.Group))
                raise ValueError(f"{path}: group {group!r} not found; groups at the root: {found} "
                                 f"(pass one of them as group=, or group=None for the root).")
            node = f[group]
        subgroups = sorted(k for k in node if isinstance(node[k], h5py.Group))
        try:
            for key in node:
                obj = node[key]
                if isinstance(obj, h5py.Dataset):
                    if obj.dtype.kind not in "biuf":
                        raise _file_error(path, key, f"has HDF5 dtype {obj.dtype}, not a number type",
                                          "store numeric datasets (float64 / int64)")
                    arrays[key] = obj[()]
            attrs = {k: node.attrs[k] for k in node.attrs}
        except ValueError:
            raise
        except Exception as err:  # noqa: BLE001 - damaged chunks raise OSError / RuntimeError
            raise _corrupt(path, "a dataset cannot be read", err) from None
    header = attrs.pop(_META_KEY, None)
    if isinstance(header, bytes):
        header = header.decode()
    for key in _STRING_FIELDS:
        if key in attrs:
            value = attrs[key]
            strings[key] = value.decode() if isinstance(value, bytes) else str(value)
    if header is None and subgroups and "steps" not in arrays:
        strings["__hint__"] = f" (the file has groups {subgroups}: pass group= to read one)"
    return arrays, header, strings


def _build_run(path: str, arrays: dict, header: str | None, strings: dict) -> Run:
    """A validated Run from the arrays of a file (ufm-written when ``header`` is given)."""
    hint = strings.pop("__hint__", "")
    parsed = None if header is None else _parse_header(path, header)   # type and schema first
    unknown = sorted(set(arrays) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; a bridge run holds the arrays {list(_FIELDS)}"
                         f" (plus the strings 'name' and 'meta'): rename or drop the others.")
    for key, arr in arrays.items():
        if arr.dtype.kind not in "iuf":
            raise _file_error(path, key, f"has dtype {arr.dtype}",
                              "store numbers (float64, or int64 for " + ", ".join(_INT_FIELDS) + ")")
    if parsed is not None:
        fields, meta, stored_hash = _from_header(path, arrays, parsed)
        if not isinstance(stored_hash, str):
            raise _file_error(path, "content_hash", "is missing from the header (every file ufm writes has one, so "
                              "this one was edited and its arrays cannot be checked)",
                              "record or export the run again")
    else:
        fields, meta, stored_hash = _from_foreign(path, arrays, strings, hint)
    try:
        run = Run(**fields, meta=meta)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except TypeError as err:   # unknown scalar in a header
        raise ValueError(f"{path}: the header does not match the fields of Run ({err}); write the file with "
                         f"save_run.") from None
    if stored_hash is not None and run.meta["content_hash"] != stored_hash:
        raise ValueError(f"{path}: field 'content_hash' does not match the arrays (stored {stored_hash[:12]}..., "
                         f"computed {run.meta['content_hash'][:12]}...): the file was changed or corrupted after "
                         f"it was written; record or export it again.")
    return run


def _parse_header(path: str, text: str) -> dict:
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise _file_error(path, "header", f"is not valid JSON ({err})", "write the file with save_run") from None
    if not isinstance(header, dict):
        raise _file_error(path, "header", "is not a JSON object", "write the file with save_run")
    problem = check_run_file(header)
    if problem is not None:
        raise ValueError(f"{path}: field {problem}.")
    return header


def _from_header(path: str, arrays: dict, header: dict):
    meta = header.get("meta")
    scalars = header.get("scalars", {})
    if not isinstance(meta, dict) or not isinstance(scalars, dict):
        raise _file_error(path, "header", "lacks the 'meta' / 'scalars' objects", "write the file with save_run")
    for name in ("steps", "grams", "labels", "counts"):
        if name not in arrays:
            raise _file_error(path, name, "is missing from a file written by ufm",
                              "the file was truncated or edited: export the run again")
    fields = {name: arrays.get(name) for name in _FIELDS}
    fields.update(scalars)
    return fields, meta, meta.get("content_hash")


def _from_foreign(path: str, arrays: dict, strings: dict, hint: str):
    fields = {name: arrays.get(name) for name in _FIELDS}
    if fields["steps"] is None:
        raise _file_error(path, "steps", f"is missing{hint}", "store the training step of each record as 'steps' (T,)")
    defaults = []
    if fields["grams"] is None:
        if fields["means"] is None:
            raise _file_error(path, "grams", f"is missing and so is 'means'{hint}",
                              "store 'grams' (T, K, K) = M^T M, or the class means 'means' (T, d, K) as columns")
        try:
            M = run_array("means", fields["means"], ndim=3)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        fields["means"] = M
        fields["grams"] = np.einsum("tdk,tdl->tkl", M, M)
        defaults.append("grams")
    K = np.shape(fields["grams"])[-1] if np.ndim(fields["grams"]) == 3 else None
    if K is None:
        raise _file_error(path, "grams", f"has shape {np.shape(fields['grams'])}, expected (T, K, K)",
                          "store one square class-mean Gram per recorded step")
    if fields["labels"] is None:
        fields["labels"] = np.arange(K)
        defaults.append("labels")
    if fields["counts"] is None:
        fields["counts"] = np.ones(K, dtype=np.int64)
        defaults.append("counts")
    meta = {}
    if "meta" in strings:
        try:
            meta = json.loads(strings["meta"])
        except json.JSONDecodeError as err:
            raise _file_error(path, "meta", f"is not valid JSON ({err})", "store json.dumps(a dict)") from None
        if not isinstance(meta, dict):
            raise _file_error(path, "meta", f"is JSON {type(meta).__name__}, not an object", "store json.dumps(a dict)")
    if defaults:
        meta = {**meta, "defaults": {name: _DEFAULT_NOTES[name] for name in defaults}}
    fields["name"] = strings.get("name", "")
    return fields, meta, meta.get("content_hash")


_DEFAULT_NOTES = {"grams": "means^T means (absent from the file)",
                  "labels": "arange(K) (absent from the file)",
                  "counts": "ones, i.e. equal class weights (absent from the file)"}


# -- recording ----------------------------------------------------------------------------------
class _Handle:
    """What :meth:`Exporter.attach` returns: ``remove()`` (or leaving a ``with`` block) detaches the hook."""

    def __init__(self, exporter: Exporter):
        self._exporter = exporter

    def remove(self) -> None:
        if self._exporter._handle is self:
            self._exporter.detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class Capture:
    """The object a :meth:`Exporter.capture` block yields.

    Attributes
    ----------
    step : int
        The step being recorded.
    W : array or None
        Classifier to record; may be set inside the block.
    loss : float or None
        Loss to record; may be set inside the block (e.g. the probe loss
        computed from the model's output).
    features : ndarray (n, d) or None
        After the block: the features recorded (the captured batches, in order).
    """

    def __init__(self, step, W, loss):
        self.step, self.W, self.loss = step, W, loss
        self.features = None
        self._batches: list[np.ndarray] = []


class Exporter:
    """Accumulate class-mean Grams, class means, classifiers and within-class traces over training.

    Torch-free: ``features`` may be a numpy array, a list or a torch tensor
    (read through ``.detach().cpu().numpy()``). Statistics per record, for
    features ``h_i`` (rows) with label ids ``y_i`` and class ``k`` holding
    ``n_k`` examples:

    * class mean ``mu_k = (1/n_k) sum_{y_i = k} h_i`` (**uncentred**: no global
      mean removed), the column ``k`` of ``M`` (d x K);
    * Gram ``G = M^T M`` (K x K);
    * within-class trace ``(1/n_k) sum_{y_i = k} ||h_i - mu_k||^2``;
    * classifier rows in the order of ``labels`` (see :meth:`record`).

    Two ways to feed it: call :meth:`record` with the features, or attach it
    to the final linear layer of a model (:meth:`attach`) and run the probe
    set inside :meth:`capture`. Each record is added in one step, so a
    recording interrupted (Ctrl-C, an error) keeps every record completed
    before it: :meth:`run` and :meth:`save` work on what was recorded so far,
    and ``autosave`` rewrites a file after each record.

    Parameters
    ----------
    labels : sequence of int
        The label id of each class, in the order the Gram rows should have
        (distinct). Samples whose label is not listed are an error.
    attributes : int array (K, F), optional
        Latent attribute table of the classes, in the order of ``labels``.
    keep_means : bool
        Store the class means (T x d x K) as well as their Gram (default True).
    name : str
        A short description of the run.
    meta : dict, optional
        How the run was made (JSON-friendly); stored in ``Run.meta``.
    autosave : str or path-like, optional
        Rewrite this file (``.npz``, ``.safetensors`` or ``.h5``, atomically)
        after every record, so a crash loses at most the record in progress.
        Costs one save of the whole run per record.
    classifier_rows : {"auto", "labels", "classes"}
        Which rows of a recorded classifier ``W`` (K_out x d) belong to the
        classes. ``"labels"``: the label ids are row ids (``W[labels]``, e.g.
        vocabulary ids of a language model's head). ``"classes"``: ``W`` has
        exactly one row per class, in the order of ``labels``. ``"auto"``
        (default): whichever is unambiguous; label ids ``0..K-1`` (or a
        permutation of them) with a classifier of more rows, or a permutation
        with exactly K rows, could mean either and are refused with a message
        asking for one of the two.

    References
    ----------
    THEORY.md §8.6 (Gram-matrix bridge).

    Examples
    --------
    >>> import numpy as np
    >>> ex = Exporter(labels=[0, 1, 2])
    >>> rng = np.random.default_rng(0)
    >>> for step in (0, 10, 100):
    ...     ex.record(step, rng.normal(size=(6, 4)), labels=[0, 1, 2, 0, 1, 2])
    >>> ex.run().grams.shape
    (3, 3, 3)

    With a torch model whose last layer is ``model.fc`` (a ``Linear``)::

        exporter = Exporter(labels=range(10))
        exporter.attach(model.fc, weight=True)      # records fc's input and fc.weight
        for step in range(total):
            ...                                     # training: the hook records nothing
            if step in record_at:
                model.eval()
                with torch.no_grad(), exporter.capture(step, probe_y):
                    for xb in probe_batches:
                        model(xb)
                model.train()
        exporter.detach()
        exporter.save("run.npz")
    """

    def __init__(self, labels, *, attributes=None, keep_means: bool = True, name: str = "", meta: dict | None = None,
                 autosave: str | os.PathLike | None = None, classifier_rows: str = "auto"):
        labels = np.asarray(_to_host(labels))
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D sequence of integer label ids (one per class), got "
                             f"dtype {labels.dtype}, shape {labels.shape}.")
        if len(np.unique(labels)) != len(labels) or len(labels) < 2:
            raise ValueError(f"labels must hold at least 2 distinct label ids, got {labels.tolist()[:10]}.")
        if np.any(labels < 0):
            raise ValueError(f"labels must be label ids >= 0, got {labels.tolist()[:10]}.")
        self.labels = labels.astype(np.int64)
        self._index = {int(v): k for k, v in enumerate(self.labels)}
        self.attributes = None if attributes is None else np.asarray(attributes)
        if self.attributes is not None and (self.attributes.ndim != 2 or self.attributes.shape[0] != len(labels)):
            raise ValueError(f"attributes must be a (K = {len(labels)}, F) table, one row per label, got shape "
                             f"{self.attributes.shape}.")
        if classifier_rows not in ("auto", "labels", "classes"):
            raise ValueError(f"classifier_rows must be 'auto', 'labels' or 'classes', got {classifier_rows!r}.")
        self.classifier_rows = classifier_rows
        self.keep_means = bool(keep_means)
        self.name = str(name)
        self.meta = jsonable(dict(meta or {}))
        try:
            json.dumps(self.meta)
        except TypeError as err:
            raise ValueError(f"meta must be JSON-friendly (numbers, strings, lists, dicts): {err}.") from None
        self.autosave = None if autosave is None else os.fspath(autosave)
        if self.autosave is not None:
            file_format(self.autosave, default_npz=True)
        self._records: list[dict] = []     # one dict per record, appended in one step (interrupt-safe)
        self._module = None
        self._handle = None
        self._torch_handle = None
        self._position = None
        self._weight = False
        self._capture: Capture | None = None

    @property
    def K(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return len(self._records)

    @property
    def steps(self) -> list[int]:
        """The steps recorded so far."""
        return [r["step"] for r in self._records]

    # -- the plain-function path --------------------------------------------------------------
    def _check_step(self, step) -> int:
        step = check_int("step", step, 0)
        if self._records and step <= self._records[-1]["step"]:
            raise ValueError(f"step {step} is not after the previous record's step {self._records[-1]['step']}; "
                             f"record steps in increasing order.")
        return step

    def record(self, step: int, features, labels, *, W=None, loss=None, position: int | None = None) -> None:
        """Record one step.

        All checks run before anything is stored: a record that fails leaves
        the exporter as it was.

        Parameters
        ----------
        step : int
            Training step (larger than the previous record's).
        features : array (n, d), or (n, seq, d) with ``position``
            Penultimate features of the probe set, one row per example.
        labels : int array (n,)
            Label id of each row; every class of the exporter must appear, and
            with the same counts at every record.
        W : array (K_out, d), optional
            Classifier weights (e.g. ``linear.weight``); the rows of the
            classes are chosen by the exporter's ``classifier_rows``. Record it
            at every step or never.
        loss : float, optional
            Training loss at this step. Record it at every step or never.
        position : int, optional
            For 3-D features (batch, seq, d): the token whose feature is the
            example's (e.g. ``-1``, the last token). Required for 3-D features.
        """
        step = self._check_step(step)
        H = _to_host(features)
        if not hasattr(H, "shape"):
            H = np.asarray(H)
        if len(H.shape) == 3 or position is not None:
            H = _select_position(H, _check_position(position), "features")   # a view: select before copying
        X = as_numpy(H, "features")
        if X.ndim != 2:
            raise ValueError(f"features must be (n_examples, d) (one row per example), got shape {X.shape}.")
        y = _as_label_ids(labels, "labels")
        if y.shape != (X.shape[0],):
            raise ValueError(f"labels must have one entry per feature row ({X.shape[0]}), got shape {y.shape}.")
        try:
            idx = np.array([self._index[int(v)] for v in y], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"labels holds {err.args[0]}, which is not one of the exporter's classes "
                             f"{self.labels.tolist()[:10]}...; pass every class id when creating the Exporter.") from None
        counts = np.bincount(idx, minlength=self.K)
        if np.any(counts == 0):
            missing = self.labels[counts == 0].tolist()[:10]
            raise ValueError(f"classes {missing} have no example in this record; the probe set must cover every class.")
        first = self._records[0] if self._records else None
        if first is not None:
            if not np.array_equal(counts, first["counts"]):
                raise ValueError("the examples per class changed between records; record the same probe set each time.")
            if X.shape[1] != first["means"].shape[0]:
                raise ValueError(f"features have d = {X.shape[1]} columns, earlier records had "
                                 f"{first['means'].shape[0]}; record the same layer each time.")
            for name, value in (("W", W), ("loss", loss)):
                if (value is None) != (first[name] is None):
                    raise ValueError(f"{name} was {'not ' if first[name] is None else ''}recorded at the first "
                                     f"record; record it at every step or never.")
        Wn = None if W is None else self._select_W(as_numpy(W, "W"), X.shape[1])
        if loss is not None:
            loss = float(loss)
            if not np.isfinite(loss):
                raise ValueError(f"loss is {loss}; the run diverged (stop recording before the divergence).")
        # class means by sorted segments (fast for large n; every class has >= 1 example)
        order = np.argsort(idx, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        M = (np.add.reduceat(X[order], starts, axis=0) / counts[:, None]).T       # (d, K)
        within = np.bincount(idx, weights=np.sum((X - M.T[idx]) ** 2, axis=1), minlength=self.K) / counts
        rec = {"step": step, "gram": M.T @ M, "means": M, "within": within, "W": Wn, "loss": loss, "counts": counts}
        self._records.append(rec)          # the only mutation: a record is all in or all out
        if self.autosave is not None:
            save_run(self.run(), self.autosave)

    def _select_W(self, Wn: np.ndarray, d: int) -> np.ndarray:
        """The classifier rows of the exporter's classes, in its order (see ``classifier_rows``)."""
        if Wn.ndim != 2 or Wn.shape[1] != d:
            raise ValueError(f"W must be (K_out, d = {d}) (rows = output labels), got shape {Wn.shape}.")
        K_out, top = Wn.shape[0], int(self.labels.max())
        identity = bool(np.array_equal(self.labels, np.arange(self.K)))
        mode = self.classifier_rows
        if mode == "auto":
            if K_out == self.K and (identity or top >= self.K):
                mode = "classes"
            elif K_out > self.K and not identity and top < K_out:
                mode = "labels"
            elif K_out >= self.K and top < K_out:
                raise ValueError(
                    f"W has {K_out} rows and the labels are {'0..K-1' if identity else 'a permutation of 0..K-1'}: "
                    f"ambiguous. Say which rows are the classes: Exporter(..., classifier_rows='labels') when the "
                    f"label ids are the classifier's row ids (e.g. vocabulary ids), or classifier_rows='classes' "
                    f"with W holding exactly one row per class in the order of labels (e.g. W[class_token_ids]).")
            else:
                raise ValueError(f"W has {K_out} rows: too few to select the label ids (largest {top}) and not "
                                 f"one row per class (K = {self.K}); pass the full classifier.")
        if mode == "labels":
            if top >= K_out:
                raise ValueError(f"classifier_rows='labels' but W has {K_out} rows and the largest label id is "
                                 f"{top}; pass the full classifier.")
            return Wn[self.labels]
        if K_out != self.K:
            raise ValueError(f"classifier_rows='classes' needs one row per class (K = {self.K}), W has {K_out}; "
                             f"pass W[class_rows] or classifier_rows='labels'.")
        return Wn

    # -- the forward-hook path ----------------------------------------------------------------
    def attach(self, module, *, position: int | None = None, weight: bool = False) -> _Handle:
        """Record the input of ``module`` inside :meth:`capture` blocks, through a forward hook.

        ``module`` is typically the final linear layer, so its input is the
        penultimate feature. Duck-typed: anything with
        ``register_forward_hook(fn)`` (torch ``nn.Module``); torch is not
        imported. Outside a :meth:`capture` block the hook does nothing, so
        training forward passes are not recorded.

        Parameters
        ----------
        module : torch.nn.Module (duck-typed)
            The module whose first positional input is recorded.
        position : int, optional
            For 3-D inputs (batch, seq, d): the token to keep (e.g. ``-1``,
            the last token). Required for 3-D inputs; an error for 2-D ones.
        weight : bool
            Also record ``module.weight`` (K_out x d, rows = output labels) as
            ``W`` at every capture (see :meth:`record` for the row selection).

        Returns
        -------
        handle
            ``handle.remove()`` detaches the hook (as :meth:`detach` does);
            usable as a context manager.
        """
        if self._handle is not None:
            raise ValueError("this Exporter is already attached to a module; call detach() first.")
        if not callable(getattr(module, "register_forward_hook", None)):
            raise ValueError(f"module must have register_forward_hook (a torch.nn.Module), got "
                             f"{type(module).__name__}; or call record(step, features, labels) directly.")
        if weight and getattr(module, "weight", None) is None:
            raise ValueError(f"weight=True but {type(module).__name__} has no .weight; pass W to capture() instead.")
        self._position = _check_position(position)
        self._weight = bool(weight)
        self._torch_handle = module.register_forward_hook(self._hook)
        self._module = module
        self._handle = _Handle(self)
        return self._handle

    def detach(self) -> None:
        """Remove the forward hook installed by :meth:`attach` (no-op when not attached)."""
        if self._torch_handle is not None:
            self._torch_handle.remove()
        self._module = self._handle = self._torch_handle = None

    def _hook(self, module, inputs, output):
        cap = self._capture
        if cap is None:
            return
        if not isinstance(inputs, tuple) or len(inputs) == 0:
            raise ValueError(f"{type(module).__name__} was called without a positional input; the hook records "
                             f"the first positional input (call it as module(features)).")
        x = _select_position(inputs[0], self._position, f"inputs of {type(module).__name__}")
        if len(getattr(x, "shape", ())) != 2:
            raise ValueError(f"inputs of {type(module).__name__} must be (batch, d) or (batch, seq, d) with "
                             f"position=, got shape {tuple(getattr(x, 'shape', ()))}.")
        cap._batches.append(as_numpy(x, "features"))

    @contextlib.contextmanager
    def capture(self, step: int, labels, *, W=None, loss=None):
        """Record one step from the forward passes run inside the ``with`` block.

        Every forward pass of the attached module inside the block adds its
        input batch (in call order); at the end of the block the batches are
        concatenated and passed to :meth:`record` with ``labels`` (one per
        example, in the same order). If the block raises (Ctrl-C included),
        nothing is recorded and earlier records are kept.

        Parameters
        ----------
        step : int
            Training step (larger than the previous record's).
        labels : int array (n,)
            Label id of each probe example, in the order the batches are run.
        W : array (K_out, d), optional
            Classifier to record (or use ``attach(..., weight=True)``).
        loss : float, optional
            Loss to record; may also be set inside the block as ``cap.loss``.

        Yields
        ------
        Capture
            ``cap.loss`` / ``cap.W`` may be set inside the block; after it,
            ``cap.features`` holds the recorded features.

        Notes
        -----
        Put the model in eval mode and wrap the block in ``torch.no_grad()``
        yourself (ufm does not import torch); the features are detached and
        copied to host memory either way.
        """
        if self._handle is None:
            raise ValueError("capture() needs an attached module: call exporter.attach(model.fc) first (the final "
                             "linear layer, whose input is the penultimate feature), or use record().")
        if self._capture is not None:
            raise ValueError("capture() blocks cannot be nested; close the current block first.")
        if W is not None and self._weight:
            raise ValueError("W was passed to capture() but attach(..., weight=True) already records module.weight; "
                             "use one of them.")
        cap = Capture(self._check_step(step), W, loss)
        self._capture = cap
        try:
            yield cap
        finally:
            self._capture = None
        if not cap._batches:
            raise ValueError(f"no forward pass of the attached {type(self._module).__name__} ran inside the capture "
                             f"block for step {cap.step}; run the model on the probe inputs inside it.")
        cap.features = np.concatenate(cap._batches, axis=0)
        W = self._module.weight if self._weight else cap.W
        self.record(cap.step, cap.features, labels, W=W, loss=cap.loss)

    # -- results ------------------------------------------------------------------------------
    def run(self) -> Run:
        """The run recorded so far (validated, read-only); works after an interrupted recording."""
        recs = list(self._records)        # a snapshot: consistent whatever happens next
        if not recs:
            raise ValueError("nothing recorded yet; call record(step, features, labels) (or capture) first.")
        has_W, has_loss = recs[0]["W"] is not None, recs[0]["loss"] is not None
        return Run(steps=np.array([r["step"] for r in recs]), grams=np.stack([r["gram"] for r in recs]),
                   labels=self.labels, counts=recs[0]["counts"], attributes=self.attributes,
                   means=np.stack([r["means"] for r in recs]) if self.keep_means else None,
                   W=np.stack([r["W"] for r in recs]) if has_W else None,
                   within=np.stack([r["within"] for r in recs]),
                   loss=np.array([r["loss"] for r in recs]) if has_loss else None, name=self.name, meta=self.meta)

    def save(self, path: str | os.PathLike, *, group: str | None = None) -> str:
        """Write the run recorded so far (see :func:`save_run`).

        Parameters
        ----------
        path : str or path-like
            The file; its extension picks the container (``.npz``, ``.safetensors``, ``.h5``).
        group : str, optional
            HDF5 only: the group to write into.

        Returns
        -------
        str
            The path written.
        """
        return save_run(self.run(), path, group=group)
