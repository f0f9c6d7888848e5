import argparse
import json

import pytest

from config.cli import add_config_arguments, config_from_args
from config.config import DANNConfig
from utils.io import UserError


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


def test_paper_schedules_and_default_recipe():
    config = DANNConfig()
    assert (config.learning_rate, config.lr_alpha, config.lr_beta) == (0.01, 10.0, 0.75)
    assert (config.momentum, config.grl_gamma) == (0.9, 10.0)
    # Shape, classes and network come from the data: 28x28x3, ten digits, the MNIST column.
    assert config.input_shape is None and config.num_classes is None and config.network is None
    assert (config.source, config.target, config.target_test) == ("mnist", "mnist_m", None)
    # The documented deviations of the default recipe: 32 + 32, fixed length, instance norm.
    assert config.batch_size == 64 and config.total_steps == 32000
    assert config.input_norm == "instance" and config.target_val_size == 1000
    assert config.eval_every_steps == 32000 // 20


def test_every_field_overrides_and_save_round_trips(tmp_path):
    args = parse(["--learning-rate", "0.02", "--batch-size", "64", "--mode", "source_only",
                  "--input-shape", "28,28,3", "--deterministic", "--run-name", "r1",
                  "--steps-per-epoch", "7"])
    config = config_from_args(args)
    assert config.learning_rate == 0.02 and config.batch_size == 64
    assert config.mode == "source_only" and config.deterministic is True
    assert config.steps_per_epoch == 7
    config.save(tmp_path)
    assert DANNConfig.load(tmp_path / "config.json") == config
    assert "learning_rate: 0.02" in (tmp_path / "config.txt").read_text()
    assert json.loads((tmp_path / "config.json").read_text())["mode"] == "source_only"


def test_batch_size_leaves_the_number_of_updates_alone():
    assert config_from_args(parse(["--batch-size", "256"])).total_steps == 32000
    # steps_per_epoch=None is the default's 8,000 on MNIST; on another source it follows the
    # source's size (at least 250 updates an epoch), whatever the batch.
    assert DANNConfig(batch_size=256, steps_per_epoch=None).steps_per_epoch == 8000
    own = DANNConfig(source="my/source", target="my/target", batch_size=256)
    assert own.steps_per_epoch is None and own.eval_every_steps is None
    own.fill_schedule(5900)
    assert (own.steps_per_epoch, own.eval_every_steps) == (800, 160)
    tiny = DANNConfig(source="my/source", target="my/target")
    tiny.fill_schedule(525)
    assert tiny.total_steps == 4 * 250


def test_epoch_scale_shortens_the_datas_epoch_on_every_pair_alike():
    assert DANNConfig(epoch_scale=0.9375).steps_per_epoch == 7500
    assert config_from_args(parse(["--epoch-scale", "0.5"])).total_steps == 16000
    own = DANNConfig(source="my/source", target="my/target", epoch_scale=0.5)
    own.fill_schedule(5900)
    assert own.steps_per_epoch == 400
    # A steps_per_epoch given outright is the user's, and stays as given.
    assert DANNConfig(steps_per_epoch=3000, epoch_scale=0.5).steps_per_epoch == 3000
    with pytest.raises(UserError, match="--epoch-scale"):
        DANNConfig(epoch_scale=0.0)


def test_old_configs_load_with_the_settings_they_were_trained_with(tmp_path):
    fields = DANNConfig(input_norm="mean").to_dict()
    for name in ("recipe", "input_norm", "target_val_size", "target_val_seed", "ema_decay",
                 "entropy_weight", "entropy_start", "eval_every_steps", "eval_subset",
                 "vat_weight", "vat_radius", "vat_start"):
        del fields[name]
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = DANNConfig.load(tmp_path / "config.json")
    assert config.input_norm == "mean" and config.target_val_size == 0
    assert config.ema_decay == 0 and config.entropy_weight == 0 and config.vat_weight == 0
