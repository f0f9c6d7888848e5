"""What a finished run gives TensorBoard besides scalars, read back with
TensorBoard's own loaders."""
import json
import os

import numpy as np
import pytest

from tests.conftest import png_size


def accumulator(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    return events


def tags_of(events, plugin):
    return sorted(tag for tag in events.Tags()["tensors"]
                  if events.SummaryMetadata(tag).plugin_data.plugin_name == plugin)


@pytest.mark.parametrize("run", ["dann", "source_only"])
def test_a_run_writes_hparams_text_and_images_once(smoke_runs, run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    log_dir = os.path.join(smoke_runs, "logs", run)
    events = accumulator(log_dir)
    assert tags_of(events, "text") == ["run/command", "run/config", "run/results"]
    assert tags_of(events, "images") == ["data/samples", "target/confusion_matrix",
                                         "target/predictions"]
    # Once per run, at its last step: never per step.
    for tag in tags_of(events, "images") + tags_of(events, "text"):
        assert [event.step for event in events.Tensors(tag)] == [2], tag
    session = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert session.group_name == run
    assert session.hparams["mode"].string_value == run and session.hparams["seed"].number_value == 42
    assert session.hparams["recipe"].string_value == "default"
    assert session.hparams["updates"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert [info.name for info in experiment.hparam_infos][:3] == ["recipe", "mode", "seed"]
    # The metrics are scalars the run logs itself, in the sub-runs named by their group.
    assert [(m.name.group, m.name.tag) for m in experiment.metric_infos] == [
        ("validation", "acc/label_acc"), ("validation", "acc/target_val_acc"),
        ("validation", "acc/source_label_acc"), ("validation", "acc/domain_acc"),
        ("", "run/ms_per_step")]
    validation = accumulator(os.path.join(log_dir, "validation"))
    assert {m.name.tag for m in experiment.metric_infos if m.name.group} <= set(
        validation.Tags()["tensors"])
    command = events.Tensors("run/command")[0].tensor_proto.string_val[0].decode()
    assert command.startswith("`python train_MNIST2MNIST_M.py --mode " + run)
    results = json.loads(open(os.path.join(log_dir, "results.json")).read())
    assert 0 < results["tensorboard_extras_seconds"]


def test_the_projector_has_one_sprite_tile_and_metadata_row_per_point(smoke_runs):
    import re

    import tensorflow as tf

    folder = os.path.join(smoke_runs, "logs", "dann", "projector")
    # The projector's config, as TensorBoard's plugin reads it (a text-format ProjectorConfig).
    config = open(os.path.join(folder, "projector_config.pbtxt")).read()
    assert config.count("embeddings {") == 1

    def field(name):
        return re.search(rf'{name}: "([^"]+)"', config).group(1)

    features = tf.train.load_checkpoint(folder).get_tensor(
        field("tensor_name"))
    rows = open(os.path.join(folder, field("metadata_path"))).read().splitlines()
    assert rows[0] == "domain\tlabel\tpredicted\tcorrect"
    # The synthetic test sets hold 64 images per domain (fewer than 2,000: all of them).
    assert features.shape == (128, 768) and len(rows) == 1 + 128
    assert {row.split("\t")[0] for row in rows[1:]} == {"MNIST", "MNIST-M"}
    assert all(row.split("\t")[3] == str(row.split("\t")[1] == row.split("\t")[2]).lower()
               for row in rows[1:])
    width, height = png_size(os.path.join(folder, field("image_path")))
    tile = [int(n) for n in re.findall(r"single_image_dim: (\d+)", config)]
    side = int(np.ceil(np.sqrt(128)))
    assert tile == [28, 28] and (width, height) == (side * 28, side * 28)


def test_tensorboards_projector_plugin_finds_the_runs_embedding(smoke_runs):
    """`tensorboard --logdir logs` shows the Projector: its plugin, as the server runs it."""
    import time

    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    logs = os.path.join(smoke_runs, "logs")
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logs)
    multiplexer.Reload()
    plugin = ProjectorPlugin(base_plugin.TBContext(
        logdir=logs, data_provider=data_provider.MultiplexerDataProvider(multiplexer, logs)))
    deadline = time.time() + 60
    while not plugin.is_active() and time.time() < deadline:  # it decides in a thread
        time.sleep(0.1)
    assert plugin.is_active()
    assert {"dann/projector", "source_only/projector"} <= set(plugin._configs)
    features = plugin._get_reader_for_run("dann/projector").get_tensor(
        "embedding/.ATTRIBUTES/VARIABLE_VALUE")
    assert features.shape == (128, 768)


def test_extras_can_be_written_afterwards_and_replace_the_first(smoke_runs, capsys):
    from utils import tensorboard_extras

    log_dir = os.path.join(smoke_runs, "logs", "dann")
    tensorboard_extras.main(["--run", "dann", "--output-root", smoke_runs])
    assert "wrote HParams, Text, Images and the Projector of run dann" in capsys.readouterr().out
    events = accumulator(log_dir)
    assert [event.step for event in events.Tensors("target/predictions")] == [2]
    assert len([name for name in os.listdir(log_dir) if name.startswith("events.")]) == 1
