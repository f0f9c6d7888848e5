"""requirements.txt matches the imports, both ways: nothing listed goes unused, nothing used
goes unlisted."""
import ast
import os
import re
import sys

from tests.conftest import ROOT

# Distribution name -> the module it is imported as.
IMPORT_NAMES = {"scikit-image": "skimage", "scikit-learn": "sklearn",
                "opencv-python-headless": "cv2"}
# Listed but never imported by name: tf.summary is implemented by the tensorboard
# package, and `tensorboard --logdir logs` is the README's way to read the curves.
NOT_IMPORTED = {"tensorboard"}
LOCAL = {"config", "model", "utils", "tests", "create_mnistm", "train_MNIST2MNIST_M"}


def requirements():
    with open(os.path.join(ROOT, "requirements.txt")) as handle:
        lines = [line.split("#")[0].strip() for line in handle]
    return {re.split(r"[=<>!~\[;]", line)[0].strip().lower() for line in lines if line}


def imported_modules():
    """Top-level names of every module imported by the project's Python files."""
    names = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("logs", "checkpoints")]
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        names.add(node.module.split(".")[0])
    return names


def import_name(requirement):
    return IMPORT_NAMES.get(requirement, requirement)


def test_every_requirement_is_imported():
    imported = imported_modules()
    for requirement in requirements() - NOT_IMPORTED:
        assert import_name(requirement) in imported, f"{requirement} is listed but never imported"


def test_every_third_party_import_is_listed():
    listed = {import_name(requirement) for requirement in requirements()}
    third_party = imported_modules() - set(sys.stdlib_module_names) - LOCAL
    assert third_party <= listed, f"imported but not in requirements.txt: {third_party - listed}"
