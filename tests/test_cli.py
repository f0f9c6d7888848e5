"""A command line that explains itself: every flag has help with its default and
allowed values, taken from DANNConfig's docstring; prefixes of flags are refused."""
import argparse
import dataclasses

import pytest

import create_mnistm
import train_MNIST2MNIST_M
from config.checks import INPUT_NORMALISATIONS, MODES, STRATEGIES
from config.cli import FIELD_DOCS, attribute_docs, flag_defaults
from config.config import DANNConfig
from config.recipes import RECIPES, recipe_fields
from tests.conftest import assert_one_line_failure, run_script
from utils import samples
from utils.io import ArgumentParser, UserError

PARSERS = {"train_MNIST2MNIST_M.py": train_MNIST2MNIST_M.build_parser,
           "create_mnistm.py": create_mnistm.build_parser,
           "utils/samples.py": samples.build_parser}


def flag_help(parser):
    """{--flag: help text} of every option of `parser` except -h/--help."""
    return {action.option_strings[-1]: action.help for action in parser._actions
            if not isinstance(action, argparse._HelpAction)}


@pytest.mark.parametrize("script", PARSERS)
def test_no_flag_lacks_help_or_default(script):
    helps = flag_help(PARSERS[script]())
    assert helps
    for flag, text in helps.items():
        assert text and text != argparse.SUPPRESS, f"{script} {flag} has no help"
        assert "default" in text, f"{script} {flag}: help names no default: {text!r}"


def test_every_config_field_is_documented_once():
    assert list(FIELD_DOCS) == [field.name for field in dataclasses.fields(DANNConfig)]
    assert all("\n" not in text and text.strip() == text for text in FIELD_DOCS.values())


def test_attribute_docs_joins_continuation_lines_and_stops_at_the_section_end():
    docstring = """Summary.

    Attributes:
      alpha: first line
        continued here.
      beta: one line.

    Returns:
      gamma: not an attribute.
    """
    assert attribute_docs(docstring) == {"alpha": "first line continued here.", "beta": "one line."}


def test_config_help_is_the_docstring_with_default_recipe_defaults_and_choices():
    helps = flag_help(train_MNIST2MNIST_M.build_parser())
    defaults = flag_defaults()
    # The defaults a run without flags gets: the default recipe over the field defaults.
    for name, value in recipe_fields("default").items():
        assert defaults[name] == value
    assert helps["--batch-size"].startswith(FIELD_DOCS["batch_size"].rstrip("."))
    assert f"(default: {defaults['batch_size']})" in helps["--batch-size"]
    assert helps["--steps-per-epoch"].endswith("(default: from the data)")
    assert "(default: from the data)" in helps["--input-shape"]
    assert "(default: false)" in helps["--deterministic"]
    for flag, choices in (("--mode", MODES), ("--strategy", STRATEGIES),
                          ("--input-norm", INPUT_NORMALISATIONS), ("--recipe", tuple(RECIPES))):
        assert f"one of: {', '.join(choices)})" in helps[flag], helps[flag]


def test_help_output_lists_choices_and_defaults():
    completed = run_script("train_MNIST2MNIST_M.py", "--help")
    assert completed.returncode == 0, completed.stderr
    assert "--mode {dann,source_only,target_only}" in completed.stdout
    assert "Traceback" not in completed.stderr
    completed = run_script("create_mnistm.py", "--help")
    assert completed.returncode == 0, completed.stderr
    text = " ".join(completed.stdout.split())  # argparse wraps lines anywhere
    assert "(default: 42)" in text and "(default: model_data/dataset)" in text


@pytest.mark.parametrize("script", ["train_MNIST2MNIST_M.py", "create_mnistm.py"])
def test_prefix_of_seed_is_refused_in_one_line(script, tmp_path):
    completed = run_script(script, "--see", "5", "--out-dir" if script == "create_mnistm.py"
                           else "--output-root", tmp_path / "out")
    assert_one_line_failure(completed, "unrecognized arguments: --see 5", "--help")
    assert not (tmp_path / "out").exists()


def test_argument_parser_refuses_prefixes_and_keeps_errors_on_one_line():
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--seeds", type=int)
    with pytest.raises(UserError, match="unrecognized arguments: --seed 5"):
        parser.parse_args(["--seed", "5"])
    with pytest.raises(UserError) as raised:
        parser.error("first\nsecond")
    assert "\n" not in str(raised.value) and "first second" in str(raised.value)


def resolve(argv):
    from config.cli import resolve_config

    args = train_MNIST2MNIST_M.parse_args(argv)
    return args, resolve_config(args)


def test_config_file_starts_a_new_run_and_flags_beside_it_override(tmp_path, capsys):
    saved = DANNConfig(source="my/source", target="my/target", learning_rate=0.003, seed=5,
                       run_name="old", input_shape=(64, 64, 3), network="small_resnet")
    saved.save(str(tmp_path), device="CPU: test")
    args, config = resolve(["--config", str(tmp_path / "config.json"), "--seed", "6",
                            "--run-name", "new", "--output-root", str(tmp_path)])
    assert dataclasses.replace(config, seed=5, run_name="old") == saved
    assert (config.seed, config.run_name) == (6, "new")
    with pytest.raises(UserError, match="--config .*missing.json: no such file"):
        resolve(["--config", str(tmp_path / "missing.json")])
    with pytest.raises(UserError, match="pass one of them"):
        resolve(["--config", str(tmp_path / "config.json"), "--run-name", "old", "--resume",
                 "--output-root", str(tmp_path)])


def test_resume_of_a_run_stopped_before_its_config_existed_starts_it_afresh(tmp_path, capsys):
    args, config = resolve(["--run-name", "k", "--resume", "--seed", "3",
                            "--output-root", str(tmp_path)])
    assert not args.resume and (config.run_name, config.seed) == ("k", 3)
    assert "run 'k' has no config.json yet" in capsys.readouterr().out


def test_a_diverged_run_resumes_with_a_lower_learning_rate_and_only_then(tmp_path):
    DANNConfig(run_name="d", learning_rate=0.01).save(str(tmp_path / "config" / "d"))
    argv = ["--run-name", "d", "--resume", "--learning-rate", "0.001", "--output-root",
            str(tmp_path)]
    with pytest.raises(UserError, match="cannot change learning_rate when resuming run 'd'; "):
        resolve(argv)
    (tmp_path / "logs" / "d").mkdir(parents=True)
    (tmp_path / "logs" / "d" / "diverged.json").write_text('{"diverged_at": 115}')
    args, config = resolve(argv)
    assert config.learning_rate == 0.001
    assert args.resume_changes == ["learning_rate 0.01 -> 0.001"]
    # Only the size of the update may change, even then.
    with pytest.raises(UserError, match=r"cannot change seed .*--learning-rate and --clip-norm "
                                        "may change"):
        resolve(argv + ["--seed", "1"])


def test_keep_checkpoints_is_another_name_for_max_to_keep():
    parser = train_MNIST2MNIST_M.build_parser()
    assert parser.parse_args(["--keep-checkpoints", "2"]).max_to_keep == 2
    assert parser.parse_args(["--max-to-keep", "4"]).max_to_keep == 4
    assert "--keep-checkpoints" in parser.format_help()
