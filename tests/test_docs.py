"""The README and docs/ stay true: links resolve, commands name code that exists and whose
--help runs, the results figure's data are the tables' own figures, and no tracker numbers
a reader cannot look up. Parsing is plain Python; the --help checks share one subprocess."""
import csv
import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

import pytest

from tests.conftest import ROOT, png_size
from utils import plot_results
from utils.reproduce_table import PUBLISHED

README = os.path.join(ROOT, "README.md")
DOC_PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
SEEDS_TABLE = os.path.join(ROOT, "docs", "results", "recipe_seeds.csv")
# Programs a README command may start with that are not this repository's code.
EXTERNAL = {"make", "pip", "tensorboard", "git", "apt-get", "source", "cd", "CUDA_VISIBLE_DEVICES"}
INTERPRETER = re.compile(r"^(python(3(\.11)?)?|\.venv/bin/python)$")
# Modules a command may run with `python -m` that come with Python or requirements.txt.
THIRD_PARTY_MODULES = {"venv", "pip", "pytest"}


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def without_code_blocks(text):
    """`text` with fenced code blocks blanked (their lines kept, so line numbers hold)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return "\n".join(lines)


def code_blocks(text):
    """[(language, [line, ...])] of the fenced code blocks of a markdown text."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = (line.strip()[3:].strip(), [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[1].append(line)
    return blocks


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
    Underscores inside a word (`improved_48k`) are kept; those that mark emphasis go."""
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    found, seen = set(), {}
    for line in without_code_blocks(text).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text):
    """Targets of markdown links and images outside code blocks and code spans."""
    prose = re.sub(r"`[^`\n]*`", "", without_code_blocks(text))
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose)


def section(text, heading):
    """The lines below the heading whose title starts with `heading`, up to the next heading
    of the same or a higher level."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"^(#{1,6})\s+(.*)$", line)
        if match and match.group(2).startswith(heading):
            level = len(match.group(1))
            end = next((i for i in range(start + 1, len(lines))
                        if re.match(rf"^#{{1,{level}}}\s", lines[i])), len(lines))
            return "\n".join(lines[start + 1:end])
    raise AssertionError(f"no heading starting with {heading!r}")


def split_words(line):
    """shlex words of a command line whose <placeholders> may hold spaces or quotes."""
    return shlex.split(re.sub(r"<[^<>]*>", "PLACEHOLDER", line), comments=True)


def shell_commands(block_lines):
    """The commands of a shell code block: continuation lines joined, comments and
    `&&` chains split, heredoc-free bash as the README writes it."""
    joined, commands = [], []
    for line in block_lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    for line in joined:
        if not line or line.startswith("#"):
            continue
        words = split_words(line)
        command = []
        for word in words + ["&&"]:
            if word == "&&":
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def inline_commands(text):
    """Commands quoted in prose as code spans: `python ...` and `make ...`."""
    return [split_words(span) for span in re.findall(r"`((?:python|make) [^`]+)`",
                                                     without_code_blocks(text))]


def readme_commands():
    text = read(README)
    commands = [command for language, lines in code_blocks(text) if language in ("bash", "")
                for command in shell_commands(lines)]
    return commands + inline_commands(text)


def program(command):
    """The command without its leading VAR=value assignments."""
    words = list(command)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words


def repository_entry_point(words):
    """('module', name) or ('script', path) for `python -m name ...` / `python path ...`
    run from the repository; None for anything else."""
    if not words or not INTERPRETER.match(words[0]) or len(words) < 2:
        return None
    if words[1] == "-m":
        return ("module", words[2])
    return ("script", words[1])


def makefile_targets():
    return set(re.findall(r"^([A-Za-z][\w-]*):", read(os.path.join(ROOT, "Makefile")), re.M))


def test_every_relative_link_resolves():
    problems = []
    for page in [README] + DOC_PAGES:
        text = read(page)
        for target in links(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = f"{os.path.relpath(page, ROOT)}: {target}"
            if not os.path.exists(resolved):
                problems.append(f"{where}: no such file")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(read(resolved)):
                problems.append(f"{where}: no heading with that anchor")
    assert not problems, "\n".join(problems)


def test_no_tracker_numbers_in_the_readme_or_docs():
    # Readers of the repository do not have the tracker: say what was found instead.
    for page in [README] + DOC_PAGES:
        for number, line in enumerate(read(page).splitlines(), start=1):
            assert not re.search(r"(?i)\bissues?\s*#?\s*\d+|\bthe issue\b", line), \
                f"{os.path.relpath(page, ROOT)}:{number}: {line}"


def readme_entry_points():
    """({entry point of this repository a README command runs: {flag it is given}},
    [problem, ...])."""
    entry_points, problems = {}, []
    targets = makefile_targets()
    for command in readme_commands():
        words = program(command)
        text = " ".join(command)
        if words and words[0] == "make":
            problems += [f"{text}: no make target {word!r}" for word in words[1:]
                         if "=" not in word and word not in targets]
            continue
        entry = repository_entry_point(words)
        if entry is None:
            if not words or (words[0] not in EXTERNAL and not INTERPRETER.match(words[0])):
                problems.append(f"{text}: neither this repository's code nor a known program")
            continue
        kind, name = entry
        if kind == "module" and name in THIRD_PARTY_MODULES:
            continue
        path = name.replace(".", os.sep) + ".py" if kind == "module" else name
        if not os.path.exists(os.path.join(ROOT, path)):
            problems.append(f"{text}: {path} does not exist")
        else:
            entry_points.setdefault(entry, set()).update(
                word.split("=")[0] for word in words[2:] if word.startswith("--"))
    return entry_points, problems


def test_readme_commands_name_what_exists():
    entry_points, problems = readme_entry_points()
    assert not problems, "\n".join(problems)
    assert ("script", "train_MNIST2MNIST_M.py") in entry_points
    assert ("module", "utils.plot_results") in entry_points


# Runs `--help` of every entry point in one process: each prints its usage and exits 0
# before any heavy import, and TensorFlow, where a module imports it, loads once.
HELP_DRIVER = r"""
import contextlib, io, json, runpy, sys
results = {}
for kind, name in json.loads(sys.argv[1]):
    sys.argv = [name, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            if kind == "module":
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(name, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    except BaseException as error:
        code = f"{type(error).__name__}: {error}"
    results[f"{kind}:{name}"] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_help_of_every_readme_entry_point_runs_and_names_its_flags():
    entry_points, _ = readme_entry_points()
    completed = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, json.dumps(sorted(entry_points))], cwd=ROOT,
        capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(results) == len(entry_points)
    for (kind, name), flags in entry_points.items():
        code, usage = results[f"{kind}:{name}"]
        assert code == 0 and "usage:" in usage, (name, code)
        # Every flag the README gives the command is one its --help lists.
        missing = sorted(flag for flag in flags
                         if not re.search(rf"{re.escape(flag)}(?![\w-])", usage))
        assert not missing, (name, missing)


def test_docs_commands_name_modules_that_exist():
    # The record's commands may carry flags of their day; the modules must still be there.
    for page in DOC_PAGES:
        for module in re.findall(r"python -m (utils(?:\.\w+)+)", read(page)):
            assert os.path.exists(os.path.join(ROOT, module.replace(".", os.sep) + ".py")), \
                f"{os.path.relpath(page, ROOT)}: {module}"


def test_readme_and_docs_name_files_that_exist():
    # A path quoted as code, e.g. `utils/training/refinement.py`: a rename must carry the docs.
    # A bare file name (`recipes.py`) is looked for anywhere in the repository.
    names = set()
    for _, folders, files in os.walk(ROOT):
        folders[:] = [name for name in folders if not name.startswith(".")]  # .git, .venv
        names.update(files)
    problems = []
    for page in [README] + DOC_PAGES:
        for path in re.findall(r"`((?:[\w.-]+/)*[\w.-]+\.py)(?:::\w+)?`", read(page)):
            exists = os.path.exists(os.path.join(ROOT, path)) if "/" in path else path in names
            if not exists:
                problems.append(f"{os.path.relpath(page, ROOT)}: {path}")
    assert not problems, "\n".join(problems)


def seed_rows():
    with open(SEEDS_TABLE, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_figure_of_the_seeds_table_is_in_the_table_it_names():
    for row in seed_rows():
        page, _, heading = row["table"].partition(", ")
        text = section(read(os.path.join(ROOT, page)), heading)
        assert row["test_accuracy"] in text, row


def test_the_readme_rows_are_the_means_of_those_seeds():
    readme = read(README)
    rows = seed_rows()

    def mean_std(recipe, mode):
        values = [float(row["test_accuracy"]) for row in rows
                  if (row["recipe"], row["mode"]) == (recipe, mode) and int(row["seed"]) < 5]
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    results = section(readme, "Results")
    for recipe in ("paper", "default", "improved", "improved_48k", "refined"):
        line = next(line for line in results.splitlines() if f"ours, `{recipe}`" in line)
        assert f"**{mean_std(recipe, 'dann')}**" in line
        if recipe in ("paper", "default"):
            for bound in ("source_only", "target_only"):
                assert mean_std(recipe, bound) in line, (recipe, bound)
    for version, figures in PUBLISHED.items():
        line = next(line for line in results.splitlines() if version in line)
        for mode in ("source_only", "dann", "target_only"):
            assert f"{figures[mode]:.4f}" in line, (version, mode)


def test_results_figure_is_drawn_from_the_table_and_from_your_runs(tmp_path, capsys):
    out = tmp_path / "results.png"
    plot_results.main(["--out", str(out)])
    width, height = png_size(out)
    assert width > height
    assert "42 seeds of 9 columns" in capsys.readouterr().out
    recipe_folder = tmp_path / "root" / "logs" / "reproduce" / "default"
    recipe_folder.mkdir(parents=True)
    (recipe_folder / "results.json").write_text(json.dumps({"recipe": "default", "runs": {"dann": [
        {"seed": 0, "target_accuracy": 0.9, "collapsed": False},
        {"seed": 1, "target_accuracy": 0.1135, "collapsed": True},
        {"seed": 2, "target_accuracy": None, "collapsed": False}]}}))
    table = plot_results.read_table(SEEDS_TABLE)
    yours = plot_results.read_reproductions(str(tmp_path / "root"))
    assert yours == {("default", "dann"): ([0.9], [0.1135])}
    assert plot_results.column_order(list(table) + list(yours))[2] == ("paper", "dann")
    plot_results.main(["--output-root", str(tmp_path / "root"), "--out", str(out)])
    assert "2 of your runs" in capsys.readouterr().out  # an unlabelled run has no dot


@pytest.mark.parametrize("content, message", [
    ("recipe,mode\npaper,dann\n", "needs the columns"),
    ("recipe,mode,seed,test_accuracy,machine,table\npaper,train,0,0.5,m,t\n", "is not one of"),
    ("recipe,mode,seed,test_accuracy,machine,table\npaper,dann,0,high,m,t\n", "is not a number"),
])
def test_bad_seeds_table_is_one_line(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(SystemExit) as stop:
        plot_results.run_main(lambda: plot_results.main(["--table", str(tmp_path / "bad.csv"),
                                                         "--out", str(tmp_path / "r.png")]))
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "r.png").exists()


def test_output_root_without_reproductions_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        plot_results.run_main(lambda: plot_results.main(["--output-root", str(tmp_path),
                                                         "--out", str(tmp_path / "r.png")]))
    assert stop.value.code == 2
    assert "no logs/reproduce/<recipe>/results.json under --output-root" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()
