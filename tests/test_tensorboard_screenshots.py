"""utils.tensorboard_screenshots: a real TensorBoard server, checked through its own
API, and a browser asked for one PNG per dashboard."""
import os
import shutil
import stat
import sys

import pytest

from tests.conftest import png_size

FAKE_BROWSER = """#!{python}
# Stands in for Chromium: records the URL and writes a 2x1 PNG where --screenshot= says.
import sys, zlib, struct
shot = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--screenshot=")][0]
open({calls!r}, "a").write(sys.argv[-1] + "\\n")
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(b"\\x00\\x00\\x00")) + chunk(b"IEND", b""))
open(shot, "wb").write(png)
"""


def fake_browser(folder):
    path = os.path.join(folder, "fake-chromium")
    calls = os.path.join(folder, "calls.txt")
    with open(path, "w") as handle:
        handle.write(FAKE_BROWSER.format(python=sys.executable, calls=calls))
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path, calls


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_every_dashboard_has_the_runs_data_and_gets_one_screenshot(smoke_runs, tmp_path, capsys):
    from utils import tensorboard_screenshots

    browser, calls = fake_browser(str(tmp_path))
    out = str(tmp_path / "image")
    tensorboard_screenshots.main(["--logdir", os.path.join(smoke_runs, "logs"), "--out", out,
                                  "--browser", browser, "--render-seconds", "1",
                                  "--run-filter", "dann"])
    names = list(tensorboard_screenshots.DEFAULT_DASHBOARDS)
    assert sorted(os.listdir(out)) == sorted(f"tensorboard_{name}.png" for name in names)
    urls = open(calls).read().split()
    assert [url.split("#")[1].split("&")[0] for url in urls] == names
    opened = dict(zip(names, urls))
    assert opened["images"].endswith("#images&tagFilter=target&regexInput=dann")
    assert opened["hparams"].endswith("#hparams")
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    assert png_size(os.path.join(out, "tensorboard_projector.png")) == (2, 1)
    assert "projector: " + os.path.join(out, "tensorboard_projector.png") in capsys.readouterr().out


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_a_dashboard_without_data_is_one_line_and_writes_nothing(smoke_runs, tmp_path):
    from tests.conftest import assert_one_line_failure, run_script

    # train/ holds scalars only: no HParams, Images or Projector there.
    browser, calls = fake_browser(str(tmp_path))
    out = tmp_path / "image"
    completed = run_script("-m", "utils.tensorboard_screenshots", "--logdir",
                           os.path.join(smoke_runs, "logs", "dann", "train"),
                           "--out", str(out), "--browser", browser, "--timeout", "30")
    assert_one_line_failure(completed, "TensorBoard shows no data for hparams, images, text, "
                            "projector", "utils.tensorboard_extras --run")
    assert not os.path.exists(calls) and os.listdir(out) == []


@pytest.mark.parametrize("flags, message", [
    (["--logdir", "no/such/logs"], "--logdir no/such/logs is not a folder"),
    (["--logdir", ".", "--browser", "no-such-chromium"], "apt-get install chromium"),
    (["--logdir", ".", "--dashboards", "graphs"], "--dashboards: unknown graphs"),
])
def test_bad_flags_are_one_line(flags, message):
    from tests.conftest import assert_one_line_failure, run_script

    assert_one_line_failure(run_script("-m", "utils.tensorboard_screenshots", *flags), message)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_real_chromium_renders_the_projector(smoke_runs, tmp_path):
    from utils import tensorboard_screenshots

    out = str(tmp_path)
    tensorboard_screenshots.main(["--logdir", os.path.join(smoke_runs, "logs"), "--out", out,
                                  "--dashboards", "projector", "--window-size", "800,600",
                                  "--render-seconds", "10"])
    assert png_size(os.path.join(out, "tensorboard_projector.png")) == (800, 600)
