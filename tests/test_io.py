"""The restricted unpickler and the atomic writes, tested in-process."""
import os
import pickle

import pytest

from tests.conftest import code_running_pickle
from utils import io as io_utils
from utils.data import safe_load_pickle
from utils.io import UserError, atomic_write_json


def test_payload_runs_under_plain_pickle(tmp_path):
    # The control: without the restriction the payload really runs, so the
    # refusal tests below would notice if it ran there.
    marker = tmp_path / "plain_load_ran_payload"
    pickle.loads(code_running_pickle(marker))
    assert marker.exists()


def test_restricted_unpickler_refuses_code_and_runs_none(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(code_running_pickle(marker))
    with pytest.raises(UserError, match=r"refusing to load global builtins\.exec"):
        safe_load_pickle(str(path))
    assert not marker.exists()


class _HalfWriteThenInterrupt:
    """A file wrapper whose write stores half the bytes, then raises as Ctrl-C would."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[:len(data) // 2])
        self.handle.flush()
        raise KeyboardInterrupt


@pytest.mark.parametrize("had_previous_file", [True, False], ids=["overwrite", "new"])
def test_interrupted_write_leaves_previous_file_and_no_temp(had_previous_file, tmp_path,
                                                            monkeypatch):
    target = tmp_path / "results.json"
    if had_previous_file:
        atomic_write_json(target, {"steps": 1})
    previous = target.read_bytes() if had_previous_file else None
    # Shadow the builtin `open` inside utils.io only.
    monkeypatch.setattr(io_utils, "open", lambda *args, **kwargs:
                        _HalfWriteThenInterrupt(open(*args, **kwargs)), raising=False)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(target, {"steps": 2, "padding": "x" * 10000})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == (["results.json"] if had_previous_file else [])
    if had_previous_file:
        assert target.read_bytes() == previous


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "results.json", {"steps": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def test_json_files_hold_null_never_nan(tmp_path):
    """Strict JSON parsers refuse NaN: every JSON file the runs write has null instead."""
    import json

    from utils.io import atomic_write_json

    path = tmp_path / "results.json"
    atomic_write_json(str(path), {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}],
                                  "d": 0.5, "e": "NaN"})
    strict = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert strict == {"a": None, "b": [1.0, None, {"c": None}], "d": 0.5, "e": "NaN"}
