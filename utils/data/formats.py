"""Domain formats: the one loader of a SPEC (`--source`, `--target`, `--target-test`), one case
per format.

Each format is a module exposing three functions and one entry of FORMATS:

    detect(spec) -> bool                 is `spec` of this format? (cheap: no decoding)
    probe(spec, flag, data_dir=None)     ((H, W), channels) of its first image
    load(spec, flag, shape, resize, data_dir=None, num_classes=None) -> Domain

`flag` names the SPEC's flag in messages; `shape` is the network's (H, W, C)
and `resize` whether images of another size may be resized to it. A new
format is one module and one line here; FORMATS is tried in order, so the
built-in names win over a folder called `mnist`.
"""
import os
from typing import Callable, NamedTuple

import utils.data.builtin as builtin
import utils.data.files as files
import utils.data.npz as npz
from utils.data.domain import LAYOUT_HINT
from utils.io import UserError


class Format(NamedTuple):
    detect: Callable
    probe: Callable
    load: Callable


FORMATS = {
    "builtin": Format(builtin.is_builtin, builtin.probe, builtin.load),
    "npz": Format(npz.is_npz, npz.probe, npz.load),
    "folder": Format(files.is_folder, files.probe, files.load),
}


def format_of(spec, flag):
    """The Format of `spec`; a UserError naming what `spec` is when no format takes it."""
    for domain_format in FORMATS.values():
        if domain_format.detect(spec):
            return domain_format
    if os.path.isfile(spec):
        raise UserError(f"{flag} {spec} is a file but not a .npz; {LAYOUT_HINT}")
    if not os.path.exists(spec):
        raise UserError(f"{flag} {spec}: no such folder or .npz file; {LAYOUT_HINT}")
    raise UserError(f"{flag} {spec} is not a folder; {LAYOUT_HINT}")


def probe(spec, flag, data_dir=None):
    """((H, W), channels) of the first image of `spec`, without loading it all."""
    return format_of(spec, flag).probe(spec, flag, data_dir)


def load(spec, flag, shape, resize, data_dir=None, num_classes=None):
    """The Domain `spec` at `shape` (images of another size are resized only if `resize`)."""
    return format_of(spec, flag).load(spec, flag, shape, resize, data_dir, num_classes)
