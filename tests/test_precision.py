"""--precision (utils/training/precision.py): 16-bit math, float32 state and results."""
import h5py
import keras
import numpy as np
import pytest

from tests.test_training import tiny_config
from utils.data import builtin_domains
from utils.io import UserError
from utils.training.loop import Trainer


def test_mixed_bfloat16_computes_in_16_bits_and_keeps_float32_state(data_dir, tmp_path):
    config = tiny_config(data_dir, precision="mixed_bfloat16", ema_decay=0.9, refine_steps=2,
                         tensorboard_extras=False, eval_every_steps=6)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    # The policy is the run's only: models built outside it stay float32.
    assert keras.mixed_precision.global_policy().name == "float32"
    layers = {layer.name: layer for layer in trainer.dann.feature_extractor.layers
              + trainer.dann.label_classifier.layers}
    assert layers["conv1"].compute_dtype == "bfloat16" and layers["fc1"].compute_dtype == "bfloat16"
    for name in ("instance_standardisation", "flatten", "class_logits"):
        assert layers[name].compute_dtype == "float32", name
    assert all(variable.dtype == "float32" for variable in trainer.dann.model.weights)
    results = trainer.fit(show_progress=False)
    assert results["steps"] == config.total_steps and not results["collapsed"]
    assert all(np.isfinite(results[key]) for key in ("target_accuracy", "source_accuracy"))
    class_logits, domain_logits = trainer.predict(trainer.test_sets["target"][0][:4])
    assert class_logits.dtype == domain_logits.dtype == "float32"
    with h5py.File(tmp_path / "checkpoints" / "tiny" / "final.weights.h5") as weights:
        dtypes = set()
        weights.visititems(lambda _, item: dtypes.add(str(item.dtype))
                           if isinstance(item, h5py.Dataset) else None)
    assert dtypes == {"float32"}


def test_mixed_float16_skipped_loss_scale_steps_are_not_a_divergence(data_dir, tmp_path):
    config = tiny_config(data_dir, precision="mixed_float16", tensorboard_extras=False,
                         eval_every_steps=6, source_val_size=0)
    trainer = Trainer(config, *builtin_domains(data_dir), output_root=str(tmp_path))
    # A loss scale so large that every scaled gradient overflows float16: the loss scaler
    # skips every update and halves the scale; the run goes on, and counts each step.
    trainer.optimizer.dynamic_scale.assign(2.0 ** 100)
    before = [variable.numpy() for variable in trainer.dann.model.trainable_variables]
    results = trainer.fit(show_progress=False)
    assert results["steps"] == trainer.step == config.total_steps
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** (100 - config.total_steps)
    assert all(np.array_equal(a, v.numpy())
               for a, v in zip(before, trainer.dann.model.trainable_variables))


def test_unknown_precision_is_one_line():
    from config.config import DANNConfig

    with pytest.raises(UserError, match="unknown precision 'fp8'; use one of float32, "
                                        "mixed_bfloat16, mixed_float16"):
        DANNConfig(precision="fp8")


@pytest.mark.slow  # 10-20 s: kept out of the default suite for its 5-minute budget
def test_benchmark_times_precisions_side_by_side(data_dir, capsys):
    from utils import benchmark

    benchmark.main(["--data-dir", data_dir, "--rounds", "1", "--project-steps", "2",
                    "--reference-steps", "1", "--precisions", "float32,mixed_bfloat16"])
    out = capsys.readouterr().out
    assert "precision (rounds alternating" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("float32 ", "mixed_"))]
    assert [row[0] for row in rows] == ["float32", "mixed_bfloat16"]
    assert rows[0][-1] == "1.000x"


@pytest.mark.parametrize("flag", ["fp8", "float32,float32", ","])
def test_benchmark_refuses_bad_precisions(data_dir, flag):
    from utils import benchmark

    with pytest.raises(UserError, match="--precisions .*give distinct names out of float32"):
        benchmark.main(["--data-dir", data_dir, "--precisions", flag])
