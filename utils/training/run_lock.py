"""One writer per run: a lock file in checkpoints/<run>/ naming the process that trains it (issue 19).

Two processes training the same run would write the same checkpoints, event
files and log.txt, and both would exit 0. The lock is a file created with
O_EXCL (atomic on a local file system) holding the PID and host of its
holder. A second process is refused with one line naming that PID. A lock
left by a process that is gone (kill -9, a power cut) on this host is taken
over with a message; one from another host is never taken over, since its
process cannot be checked from here.
"""
import json
import os
import socket
import time

from utils.io import UserError

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
