import argparse
import json


from config.config import DANNConfig, add_config_arguments, config_from_args


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


def test_paper_defaults():
    config = DANNConfig()
    assert (config.learning_rate, config.lr_alpha, config.lr_beta) == (0.01, 10.0, 0.75)
    assert (config.momentum, config.grl_gamma) == (0.9, 10.0)
    assert config.input_shape == (28, 28, 3)
    # The batch is the documented deviation: 8 + 8, one pass over MNIST per epoch.
    assert config.batch_size == 16 and config.steps_per_epoch == 60000 // 8


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


def test_batch_size_sets_default_steps_per_epoch():
    assert config_from_args(parse(["--batch-size", "256"])).steps_per_epoch == 60000 // 128
