"""One writer at a time: of a run (RunLock, a lock file in checkpoints/<run>/ naming the
process that trains it) and of a data folder (folder_lock, an flock), with the run's writer
(`run_writer`: the lock, or a multi-worker worker's scratch folder) and `delete_run`.

Two processes training the same run would write the same checkpoints, event
files and log.txt, and both would exit 0. The lock is a file created with
O_EXCL (atomic on a local file system) holding the PID and host of its
holder. A second process is refused with one line naming that PID. A lock
left by a process that is gone (kill -9, a power cut) on this host is taken
over with a message; one from another host is never taken over, since its
process cannot be checked from here.
"""
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time

try:
    import fcntl
except ImportError:  # Windows: no flock, folder_lock does not serialise
    fcntl = None

from utils.io import UserError
from utils.runs import run_dirs

LOCK_FILE = "lock"


def process_alive(pid):
    """True while process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            # The state follows the parenthesised command name: Z is a zombie, X dead.
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class RunLock:
    """The lock of the run whose checkpoints live in `folder`; a context manager."""

    def __init__(self, folder, run_name):
        self.folder, self.run_name = folder, run_name
        self.path = os.path.join(folder, LOCK_FILE)
        self.held = False

    def _holder(self):
        """The holder's {"pid", "host"}, or None when the file is gone or unreadable."""
        try:
            with open(self.path) as handle:
                holder = json.load(handle)
            return holder if isinstance(holder, dict) and "pid" in holder else None
        except (OSError, ValueError):
            return None

    def acquire(self):
        # A folder made only to hold the lock goes with it (a run that fails before it
        # writes anything leaves nothing behind).
        self.made_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        host = socket.gethostname()
        for attempt in range(50):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    # Another process may be between creating the file and writing it.
                    if attempt < 10:
                        time.sleep(0.05)
                        continue
                    print(f"taking over the unreadable lock {self.path}")
                elif holder.get("host") != host or process_alive(int(holder["pid"])):
                    raise UserError(
                        f"run {self.run_name!r} is being trained by process {holder['pid']} on "
                        f"{holder.get('host')} (lock {self.path}); wait for it to finish or stop "
                        "it, or choose another --run-name") from None
                else:
                    print(f"taking over the lock of process {holder['pid']}, which is gone "
                          f"({self.path})")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(handle, "w") as lock_file:
                json.dump({"pid": os.getpid(), "host": host}, lock_file)
            self.held = True
            return self
        raise UserError(f"cannot take the lock {self.path}; delete it if no process trains run "
                        f"{self.run_name!r}")

    def release(self):
        """Removes the lock if this process still holds it."""
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False
            if self.made_folder:
                try:
                    os.rmdir(self.folder)  # only while empty
                except OSError:
                    pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


def delete_run(output_root, run_name, lock):
    """--overwrite: deletes the run's three folders (the lock, which this process holds, stays)."""
    folders = run_dirs(output_root, run_name)
    present = [folder for folder in folders.values() if os.path.exists(folder)]
    if not present:
        return
    print(f"--overwrite: deleting run {run_name!r} ({', '.join(present)})", flush=True)
    for kind, folder in folders.items():
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if kind == "checkpoints" and path == lock.path:
                continue
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


@contextlib.contextmanager
def run_writer(output_root, run_name, task=None):
    """Where this process writes: (lock, output root, output root of the run it resumes).

    One writer per run: the run lock refuses a second process before it writes
    anything. In a multi-worker run (`task`, utils/training/distribute.py) that writer
    is the chief; another worker writes into a temporary folder outside the run,
    removed when it exits, and resumes from the chief's checkpoints.
    """
    if task is None or task.is_chief:
        with RunLock(run_dirs(output_root, run_name)["checkpoints"], run_name) as lock:
            yield lock, output_root, None
        return
    # Named with the PID, so that the folder a killed worker left is removed by the next one.
    prefix = f"dann-{run_name.replace(os.sep, '_')}-{task.type}{task.id}-pid"
    for name in os.listdir(tempfile.gettempdir()):
        pid = name[len(prefix):].split("-", 1)[0]
        if name.startswith(prefix) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)
    scratch = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    try:
        yield None, scratch, output_root
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(folder, busy_message):
    """One holder of `folder` at a time (builds of the pickles in a shared --data-dir, say);
    another waits, after printing `busy_message`. An advisory flock on the folder itself: the
    kernel releases it when its holder exits, even by kill -9, so none goes stale, and it
    leaves no file behind."""
    if fcntl is None:
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(busy_message, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(handle)  # releases the lock
