"""MirroredStrategy over two logical CPUs gives the same weights as the default strategy,
through both phases (adaptation, then refinement)."""
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Logical devices must be configured before TensorFlow starts, so this runs in a fresh process.
SCRIPT = r"""
import sys
import numpy as np
import utils  # sets the TensorFlow environment
import keras
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()

from config.config import DANNConfig
from utils.data import builtin_domains
from utils.training.loop import Trainer

data_dir, output_root = sys.argv[1], sys.argv[2]
source, target = builtin_domains(data_dir)
weights, results = {}, {}
for strategy in ("default", "mirrored"):
    # With a refinement phase (its VAT off: each replica draws its own random directions).
    config = DANNConfig(strategy=strategy, run_name=strategy, data_dir=data_dir, epochs=1,
                        steps_per_epoch=4, batch_size=16, eval_batch_size=32, target_val_size=32,
                        ema_decay=0.9, refine_steps=3, refine_interval=2, refine_vat_weight=0.0)
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(config, source, target, output_root=output_root)
    results[strategy] = trainer.fit(show_progress=False)
    weights[strategy] = [w.numpy() for w in trainer.dann.model.weights]
    print(strategy, "replicas", trainer.strategy.num_replicas_in_sync)
for a, b in zip(weights["default"], weights["mirrored"]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
moved = max(float(np.abs(a - b).max()) for a, b in
            zip(weights["default"], [w.numpy() for w in Trainer(config, source, target, output_root=output_root).dann.model.weights]))
assert moved > 1e-3, "training did not move the weights"
for key in ("target_accuracy", "source_accuracy", "domain_accuracy"):
    assert abs(results["default"][key] - results["mirrored"][key]) < 1e-6, key
print("equivalent")
"""


@pytest.mark.slow  # about 40 s
def test_mirrored_strategy_matches_default(data_dir, tmp_path):
    completed = subprocess.run([sys.executable, "-c", SCRIPT, data_dir, str(tmp_path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "mirrored replicas 2" in completed.stdout
    assert "equivalent" in completed.stdout
