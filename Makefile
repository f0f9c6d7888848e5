# The quick start's two commands, on a machine with Python 3.11 and nothing else installed:
#   make train   a virtual environment with requirements.txt (made on first use, and again when
#                requirements.txt changes), then the default training run; ARGS="..." adds flags
#   make test    the same environment, then the default test suite (make test-slow: the slow set)
# The test commands are .ci/run's (tests/test_first_hour.py checks that they stay the same).
PYTHON ?= python3.11
VENV ?= .venv
ARGS ?=
BIN := $(VENV)/bin

.PHONY: setup train test test-slow

setup: $(VENV)/.installed

# The stamp is written last, so an interrupted install is redone by the next command.
$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or name it with PYTHON=/path/to/python3.11" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "error: $(PYTHON) is Python %d.%d, and requirements.txt is pinned for 3.11; name a 3.11 with PYTHON=/path/to/python3.11" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	@touch $@

train: setup
	$(BIN)/python train_MNIST2MNIST_M.py $(ARGS)

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests
