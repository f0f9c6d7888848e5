"""Data, training loop, logging and command-line tools for DANN; importing this package also
sets up TensorFlow's environment, before TensorFlow is imported.

Every entry point (train_MNIST2MNIST_M.py, create_mnistm.py, each `python -m utils.<tool>`)
imports `utils` before TensorFlow, so that this runs first. It does three things, each only
where the user has not said otherwise:

  * TF_ENABLE_ONEDNN_OPTS=1: oneDNN's kernels, off by default in TensorFlow 2.21 here, make
    the train step about 1.5x faster on the 2-core CPU;
  * TF_CPP_MIN_LOG_LEVEL=3 on machines without a GPU device (2 with one): hides the native
    "failed call to cuInit" error a CPU-only machine logs at the first op;
  * a one-shot import hook that drops three notices TensorFlow's native code prints while it
    loads, before any log level applies (DANN_SHOW_TF_NOTICES=1 keeps them).

Environment variables only take effect before TensorFlow loads, hence a package import
rather than a function to call. model/ does not depend on any of it: it imports nothing from
utils/, so code that imports only the model gets TensorFlow's own defaults and messages.
"""

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import sys
import tempfile

# Must precede the first TensorFlow import. TF 2.21 leaves oneDNN off by default
# here; on this 2-core CPU it makes the train step about 1.5x faster.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _gpu_device_present():
    """True when the kernel exposes an NVIDIA GPU: /dev/nvidia0... (Linux) or /dev/dxg (WSL2)."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))


# CPU-only machines: TensorFlow's CUDA plugin still calls cuInit at the first
# op and logs "failed call to cuInit: ... CUDA error" at ERROR level, whatever
# CUDA_VISIBLE_DEVICES says (measured: setting it to "" leaves the line). Level 3 hides
# native ERROR logs too; Python exceptions still carry TensorFlow's errors. Where a GPU
# device exists the level stays 2, so a real CUDA problem is still reported, and the
# GPU stays usable either way. An explicit TF_CPP_MIN_LOG_LEVEL always wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _gpu_device_present() else "3")

# Notices TensorFlow's native code writes to stderr while its library loads, before
# absl logging is set up, so no log level reaches them. Matched as substrings of
# whole lines; anything else written meanwhile is passed on unchanged.
_IMPORT_NOTICES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine, GPU will not be used.",
    "oneDNN custom operations are on.",
)


@contextlib.contextmanager
def _native_stderr_without(notices):
    """Captures file descriptor 2 (where C++ logs go) and writes back every line
    that contains none of `notices` when the block ends, even on an exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True)
                    if not any(notice.encode() in line for notice in notices)]
            if kept:
                os.write(2, b"".join(kept))


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` (direct, or through Keras) inside
    `_native_stderr_without(_IMPORT_NOTICES)`; other imports are untouched."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and so that find_spec below finds the real module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec_module(module):
            with _native_stderr_without(_IMPORT_NOTICES):
                exec_module(module)

        spec.loader.exec_module = quiet_exec_module
        return spec


# DANN_SHOW_TF_NOTICES=1 turns the filter off, e.g. to see everything an import crash prints.
if "tensorflow" not in sys.modules and os.environ.get("DANN_SHOW_TF_NOTICES", "0") != "1":
    sys.meta_path.insert(0, _QuietTensorFlowImport())
