"""Screenshots of TensorBoard's dashboards, from a real server in a real browser.

    python -m utils.tensorboard_screenshots --logdir logs/reproduce/default --out image

Starts `tensorboard --logdir LOGDIR` on 127.0.0.1 (a free port), checks
through the server's own API that every dashboard asked for has data
(`/data/plugins_listing`; the Projector also lists its runs), then opens
each one in headless Chromium and writes `<out>/tensorboard_<dashboard>.png`,
so that the README shows what a reader will see. The README's TensorBoard
section is made by the command above.

Chromium is not a Python package: on Debian, `apt-get install chromium`
(`--browser` names another binary). No network is used; the server listens
on the loopback interface only and is stopped at the end.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from utils.io import ArgumentParser, UserError, ensure_writable_dir, run_main

# Dashboards, named as in the URL after '#' and as the plugins that must have data.
DASHBOARDS = ("scalars", "hparams", "images", "text", "projector", "timeseries")
# Time Series draws its charts in a way headless Chromium leaves blank (axes
# only), so the default set takes the same curves from Scalars.
DEFAULT_DASHBOARDS = ("scalars", "hparams", "images", "text", "projector")
# What each dashboard opens on, in the URL state TensorBoard's dashboards
# keep after '#': the tags a reader looks at first (a run's other cards follow).
OPENING_STATE = {"scalars": {"tagFilter": "acc"}, "images": {"tagFilter": "target"},
                 "text": {"tagFilter": "run/"}}
RUN_FILTERED = ("scalars", "images", "text")  # the dashboards that take regexInput
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def start_tensorboard(logdir, port, timeout, log):
    """A TensorBoard server on 127.0.0.1:port, once it answers and has read the runs.

    Its output goes to the file `log` (a pipe nobody reads could fill and stall it)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "0"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            log.seek(0)
            last = (log.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise UserError(f"tensorboard exited with status {server.returncode}: {last}")
        try:
            if get_json(f"{base}/data/runs"):
                return server, base
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass
        time.sleep(0.5)
    server.kill()
    raise UserError(f"tensorboard did not serve the runs of {logdir} within {timeout:.0f} s; "
                    "raise --timeout")


def dashboards_with_data(base, wanted, timeout):
    """Which of `wanted` TensorBoard enables. The Projector decides in a thread,
    so it is asked (through its run list) until it answers or time runs out."""
    deadline = time.time() + timeout
    while True:
        listing = get_json(f"{base}/data/plugins_listing")
        enabled = {name for name in wanted if listing.get(name, {}).get("enabled")}
        if "projector" in wanted and get_json(f"{base}/data/plugin/projector/runs"):
            enabled.add("projector")
        # Only the Projector's answer can change by waiting.
        if set(wanted) - enabled - {"projector"} or enabled == set(wanted) \
                or time.time() > deadline:
            return enabled
        time.sleep(1)


def screenshot(browser, url, path, width, height, budget_ms):
    """One headless Chromium screenshot of `url`, written whole or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".screenshot-") as scratch:
        shot = os.path.join(scratch, "shot.png")
        command = [browser, "--headless", "--hide-scrollbars", "--mute-audio",
                   # The sandbox cannot start as root (containers, CI); the page is
                   # our own server on the loopback interface.
                   "--no-sandbox",
                   # The Projector draws with WebGL; with no GPU, Chromium's software
                   # renderer has to be asked for.
                   "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                   f"--user-data-dir={os.path.join(scratch, 'profile')}",
                   f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
                   f"--screenshot={shot}", url]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if not os.path.exists(shot):
            raise UserError(f"{browser} wrote no screenshot of {url} (exit status "
                            f"{completed.returncode}); run it by hand to see why")
        with open(shot, "rb") as handle:
            if handle.read(8) != PNG_SIGNATURE:
                raise UserError(f"{browser} wrote something other than a PNG for {url}")
        os.replace(shot, path)


def dashboard_url(base, name, run_filter=None):
    state = dict(OPENING_STATE.get(name, {}))
    if run_filter and name in RUN_FILTERED:
        state["regexInput"] = run_filter
    return f"{base}/#{name}" + "".join(f"&{key}={urllib.parse.quote(value, safe='')}"
                                       for key, value in state.items())


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", required=True,
                        help="the folder TensorBoard reads (e.g. logs/reproduce/default)")
    parser.add_argument("--out", default="image", help="folder for the PNGs (default: image)")
    parser.add_argument("--dashboards", default=",".join(DEFAULT_DASHBOARDS),
                        help=f"comma-separated, of {', '.join(DASHBOARDS)} (default: "
                             f"{','.join(DEFAULT_DASHBOARDS)})")
    parser.add_argument("--browser", default=None,
                        help=f"the Chromium binary (default: the first of {', '.join(BROWSERS)} "
                             "on PATH)")
    parser.add_argument("--run-filter", metavar="REGEX",
                        help="show only the runs matching REGEX in Scalars, Images and Text "
                             "(e.g. seed0; HParams and the Projector always list every run)")
    parser.add_argument("--window-size", default="1400,900", help="width,height in pixels")
    parser.add_argument("--render-seconds", type=float, default=20.0,
                        help="how long the page may run before the shot (default: 20)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for TensorBoard to load the runs (default: 120)")
    args = parser.parse_args(argv)
    args.dashboards = [name.strip() for name in args.dashboards.split(",") if name.strip()]
    unknown = sorted(set(args.dashboards) - set(DASHBOARDS))
    if unknown or not args.dashboards:
        parser.error(f"--dashboards: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(DASHBOARDS)}")
    try:
        args.width, args.height = (int(n) for n in args.window_size.split(","))
    except ValueError:
        parser.error(f"--window-size must be width,height in pixels, not {args.window_size!r}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.logdir):
        raise UserError(f"--logdir {args.logdir} is not a folder; give the logs/ of a run root, "
                        "e.g. logs/reproduce/default")
    browser = args.browser or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not browser or not shutil.which(browser):
        raise UserError(f"no Chromium found ({args.browser or ', '.join(BROWSERS)}); on Debian "
                        "install it with `apt-get install chromium`, or name it with --browser")
    ensure_writable_dir(args.out)
    with tempfile.TemporaryFile() as log:
        take_screenshots(args, browser, log)


def take_screenshots(args, browser, log):
    server, base = start_tensorboard(args.logdir, free_port(), args.timeout, log)
    try:
        enabled = dashboards_with_data(base, args.dashboards, args.timeout)
        missing = [name for name in args.dashboards if name not in enabled]
        if missing:
            raise UserError(f"TensorBoard shows no data for {', '.join(missing)} in {args.logdir}; "
                            "runs trained before the extras need `python -m "
                            "utils.tensorboard_extras --run <run>`")
        for name in args.dashboards:
            path = os.path.join(args.out, f"tensorboard_{name}.png")
            screenshot(browser, dashboard_url(base, name, args.run_filter), path, args.width, args.height,
                       int(args.render_seconds * 1000))
            print(f"{name}: {path}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    run_main(main)
