"""The command line of a run's config: one `--field-name` flag per DANNConfig field, with
its help taken from the field's description in DANNConfig's docstring (the text exists
once), and the config a command line asks for (`config_from_args`; with --config and
--resume, `resolve_config`).
"""
import argparse
import dataclasses
import os
import re
import time
from typing import Optional, Tuple

from config.checks import (BN_STATISTICS, INPUT_NORMALISATIONS, MODES, ON_COLLAPSE, PRECISIONS,
                           STRATEGIES, TARGET_TERMS_SCOPES, check_run_name)
from config.config import FROM_DATA, DANNConfig, config_changes
from config.recipes import RECIPES, recipe_fields
from model import NETWORKS
from utils.io import UserError
from utils.runs import config_file, diverged_file


def _parse_bool(text):
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_shape(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W,C, got {text!r}") from None


def _parse_names(text):
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, got {text!r}")
    return names


def _parse_optional_int(text):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or none, got {text!r}") from None


_PARSERS = {
    bool: _parse_bool, int: int, float: float, str: str,
    Tuple[int, int, int]: _parse_shape, Optional[Tuple[int, int, int]]: _parse_shape,
    Optional[int]: _parse_optional_int, Optional[str]: str,
    Optional[Tuple[str, ...]]: _parse_names,
}


def attribute_docs(docstring):
    """{name: description} from the Google-style `Attributes:` section of `docstring`.

    An entry is a `name: text` line at the section's indentation; more deeply
    indented lines continue it. The section ends at the first line indented
    less than its entries (or the end). Descriptions are joined onto one line.
    """
    lines = docstring.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    docs, name, indent = {}, None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"(\w+): (.*)", line.strip()) if depth == indent else None
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name is not None:
            docs[name] += " " + line.strip()
    return docs


# The help of every train-script flag, taken from DANNConfig's docstring so the
# text exists once.
FIELD_DOCS = attribute_docs(DANNConfig.__doc__)


def _choices():
    return {"mode": MODES, "strategy": STRATEGIES, "on_collapse": ON_COLLAPSE,
            "network": tuple(NETWORKS), "input_norm": INPUT_NORMALISATIONS,
            "recipe": tuple(RECIPES), "precision": PRECISIONS,
            "bn_statistics": BN_STATISTICS, "target_terms_scope": TARGET_TERMS_SCOPES}


def _show(value):
    """A default as the user would type it on the command line."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def flag_defaults():
    """Each field's default as a run without flags gets it: the default recipe's
    value where it sets one, else the DANNConfig field default (None = derived)."""
    defaults = {field.name: field.default for field in dataclasses.fields(DANNConfig)}
    defaults.update(recipe_fields("default"))
    return defaults


def field_help(name, default, choices=()):
    """One help line: the attribute's description, its default and allowed values."""
    # An undocumented field still gets a flag (tests/test_cli.py fails on it instead).
    text = FIELD_DOCS.get(name, name.replace("_", " ")).rstrip(".")
    extra = f"default: {'from the data' if default is None and name in FROM_DATA else _show(default)}"
    if choices:
        extra += f"; one of: {', '.join(choices)}"
    # argparse %-formats help strings.
    return f"{text} ({extra})".replace("%", "%%")


# Further names of a field's flag: the name a user of other tools looks for first.
FLAG_ALIASES = {"max_to_keep": ("--keep-checkpoints",)}


def add_config_arguments(parser):
    """Adds one `--field-name` flag per DANNConfig field, with help from its docstring.

    The flags' own defaults stay None, so config_from_args can tell a flag
    given from one left out (the recipe fills those); the help shows the value
    a run without the flag gets. Allowed values are listed, not enforced here:
    DANNConfig.validate names the bad value in one line.
    """
    defaults, choices = flag_defaults(), _choices()
    for field in dataclasses.fields(DANNConfig):
        flags = ("--" + field.name.replace("_", "-"),) + FLAG_ALIASES.get(field.name, ())
        options = choices.get(field.name, ())
        help_text = field_help(field.name, defaults[field.name], options)
        if field.type is bool:
            # `--deterministic` alone means true; `--deterministic false` also works.
            parser.add_argument(*flags, dest=field.name, type=_parse_bool, nargs="?",
                                const=True, metavar="BOOL", help=help_text)
        else:
            metavar = "{" + ",".join(options) + "}" if options else field.name.upper()
            parser.add_argument(*flags, dest=field.name, type=_PARSERS[field.type],
                                metavar=metavar, help=help_text)


# What a run stopped by a NaN or Inf may change when it is resumed: the settings that
# decide how large an update is. They act from the resumed step on; recorded in log.txt.
CHANGEABLE_AFTER_DIVERGENCE = ("learning_rate", "clip_norm")


def resolve_config(args):
    """The run's config: from the flags (over --config's saved config.json, if given), or
    (with --resume) the saved one, unchanged but for what a resume may change.

    `args` are the train script's: the config flags, --config, --run-name, --resume (true
    with --resume-from too), --overwrite and --output-root. Sets `args.resume_changes`,
    the "field old -> new" changes a resume made (for log.txt).
    """
    args.resume_changes = []
    if args.resume and getattr(args, "config", None):
        raise UserError("--config starts a new run from a saved config, and --resume continues "
                        "a run with its own; pass one of them")
    if args.run_name is not None:
        # Before any path is built from it: config/<run> of `--resume` included.
        check_run_name(args.run_name)
    if args.resume and args.run_name and args.resume_from is None and not os.path.exists(
            config_file(args.run_name, args.output_root)):
        # Killed before it wrote its config (its first seconds): nothing to continue.
        print(f"run {args.run_name!r} has no config.json yet (it was stopped before it wrote "
              "one, or it never started): starting it afresh from step 0 with the flags given",
              flush=True)
        args.resume = False
    if not args.resume:
        base = saved_config(args.config) if getattr(args, "config", None) else None
        config = config_from_args(args, base,
                                  run_name=args.run_name or time.strftime("%Y%m%d-%H%M%S"))
        saved = config_file(config.run_name, args.output_root)
        if os.path.exists(saved) and not args.overwrite:
            raise UserError(f"run {config.run_name!r} already exists ({saved}); pass --resume to "
                            "continue it, --overwrite to delete it and start again, or choose "
                            "another --run-name")
        return config
    if not args.run_name:
        raise UserError("--resume needs --run-name to say which run to continue")
    config = DANNConfig.load(config_file(args.run_name, args.output_root))
    # What a collapse does, and what a finished run keeps, may change on resume: they act on
    # nothing until a collapse happens or the run ends.
    for name in ("on_collapse", "max_rollbacks", "keep_checkpoints_at_end"):
        if getattr(args, name, None) is not None:
            setattr(config, name, getattr(args, name))
    changed = [name for name, value in config_from_args(args, **config.to_dict()).to_dict().items()
               if getattr(args, name, None) is not None and getattr(args, name) != value]
    diverged = os.path.exists(diverged_file(args.run_name, args.output_root))
    if diverged:
        allowed = [name for name in changed if name in CHANGEABLE_AFTER_DIVERGENCE]
        args.resume_changes = config_changes(config.to_dict(),
                                             {name: getattr(args, name) for name in allowed})
        for name in allowed:
            setattr(config, name, getattr(args, name))
        changed = [name for name in changed if name not in allowed]
    config.validate()
    if changed:
        also = (f" (after a divergence, {' and '.join('--' + n.replace('_', '-') for n in CHANGEABLE_AFTER_DIVERGENCE)} may change)"
                if diverged else "")
        raise UserError(f"cannot change {', '.join(changed)} when resuming run {args.run_name!r}"
                        f"{also}; drop those flags or start a new run")
    return config


def saved_config(path):
    """The fields of the config.json at `path` (--config), less the run's name: a new run."""
    if not os.path.isfile(path):
        raise UserError(f"--config {path}: no such file; give the config.json of a run "
                        "(config/<run>/config.json)")
    fields = DANNConfig.load(path).to_dict()
    fields.pop("run_name")
    return fields


def config_from_args(args, base=None, **overrides):
    """Builds a DANNConfig from parsed flags (add_config_arguments) or any namespace of field
    values: `base` (the fields of a saved config.json, --config) or else the `default`
    recipe, then the recipe's values if --recipe is given, then every value given (not
    None), then `overrides`."""
    recipe = getattr(args, "recipe", None)
    values = dict(base) if base is not None else recipe_fields(recipe or "default")
    if base is not None and recipe:
        values.update(recipe_fields(recipe))
    values.update({field.name: getattr(args, field.name) for field in dataclasses.fields(DANNConfig)
                   if getattr(args, field.name, None) is not None})
    values.update(overrides)
    return DANNConfig(**values)
