"""User-facing errors and atomic file writes shared by every entry point."""
import argparse
import contextlib
import json
import math
import os
import pickle
import shutil
import sys
import tempfile


class UserError(Exception):
    """A mistake the user can fix (bad path, bad flag, bad data): printed as one line."""


def one_line(text):
    """`text` with its line breaks turned into spaces: every error is one line."""
    return " ".join(str(text).splitlines())


def run_main(main):
    """Runs `main()`, turning a UserError into a one-line message and exit status 2."""
    try:
        return main()
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose flag errors are UserErrors: one line, not the full usage block.

    Prefixes of flags are not accepted (allow_abbrev=False): with them
    `--seed 5` would silently become `--seeds 5` in a parser that has only
    `--seeds`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        command = f"-m {spec.name}" if spec and spec.name != "__main__" else self.prog
        raise UserError(one_line(f"{message}; see `python {command} --help`"))


def free_space(folder):
    """", N MiB free in <folder>" for a write error's message ("" when it cannot be read)."""
    try:
        return f", {shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}"
    except OSError:
        return ""


def ensure_writable_dir(path):
    """Creates `path` if needed and checks it can be written, before any work starts."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create output folder {path}: {error.strerror}; "
                        "choose a writable location") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output folder {path} is not writable; "
                        "fix its permissions or choose another location")
    return path


def atomic_save(path, save):
    """Calls `save(tmp_path)` beside `path`, then renames the result onto `path`.

    A crash or Ctrl-C mid-write leaves the previous file (or none) at `path`,
    never a truncated one, and no temporary file behind. The temporary name
    keeps `path`'s suffix (Keras insists on `.weights.h5`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    ensure_writable_dir(folder)
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.close(handle)
        # mkstemp makes the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        save(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def link_or_copy(source, path):
    """A hard link to `source` at `path` (replacing it: atomic_save's empty temporary file), or
    a copy where the file system has no links."""
    try:
        if os.path.exists(path):
            os.remove(path)
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)


@contextlib.contextmanager
def atomic_folder(path):
    """Yields a temporary folder beside `path`; on success it replaces `path` (any folder
    there goes), on any error or interrupt it is removed: `path` appears whole or not at all."""
    path = os.path.normpath(os.path.abspath(path))
    parent = os.path.dirname(path)
    ensure_writable_dir(parent)
    partial = tempfile.mkdtemp(dir=parent, prefix=f".partial-{os.path.basename(path)}-")
    try:
        yield partial
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def atomic_write_bytes(path, data):
    """Writes `data` to `path` atomically (see `atomic_save`)."""
    def write(tmp_path):
        with open(tmp_path, "wb") as tmp:
            tmp.write(data)

    atomic_save(path, write)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj):
    """`obj` with every NaN or infinite float replaced by None: strict JSON has no NaN, and
    parsers that follow it (JavaScript's, Python's with parse_constant) refuse the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def to_json(obj, **options):
    """Strict JSON text of `obj` (json_safe: NaN and Inf become null)."""
    return json.dumps(json_safe(obj), allow_nan=False, **options)


def atomic_write_json(path, obj):
    """Writes `obj` as strict JSON (null, never NaN) to `path` atomically."""
    atomic_write_text(path, to_json(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_pickle(path, obj):
    """Pickles `obj` to `path` atomically, streaming rather than building the bytes first."""
    def write(tmp_path):
        with open(tmp_path, "wb") as tmp:
            # Protocol 4 keeps the original repository's readers working, and
            # identical data give identical bytes.
            pickle.dump(obj, tmp, protocol=4)

    atomic_save(path, write)
