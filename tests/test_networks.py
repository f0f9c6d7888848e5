"""model/: the registry of networks, the paper's three columns, and what a DANN is built of."""
import dataclasses

import numpy as np
import pytest

from model import NETWORKS, build_dann, default_network, get_network
from model.network import Network
from utils.io import UserError

# With keras.utils.set_random_seed(0), build_dann() gives these last values of its kernels, in
# the order of dann.model.weights: conv1, conv2, G_y fc1, fc2, class_logits, G_d fc1,
# domain_logit. Keras' seeded initialisers draw in layer-creation order, so any change of
# that order (or of the layers) changes them, and with them every deterministic run.
MNIST_SEED_0_KERNEL_ENDS = (-0.0015270933508872986, 0.05013914033770561, 0.03432586044073105,
                            0.1353154480457306, 0.046295493841171265, -0.07672245055437088,
                            0.14986452460289001)


def test_the_paper_networks_and_the_default_by_input_size():
    assert list(NETWORKS)[:3] == ["mnist", "svhn", "gtsrb"]
    # Whatever the size: mnist, on images resized to its 28x28 (the others by --network).
    assert {default_network(shape) for shape in ((28, 28, 3), (20, 20, 1), (32, 32, 1),
                                                 (64, 64, 3), (100, 80, 3))} == {"mnist"}
    svhn = build_dann((32, 32, 3), 5, network="svhn")
    assert [layer.name for layer in svhn.feature_extractor.layers if "conv" in layer.name] == [
        "conv1", "conv2", "conv3"]
    assert [svhn.label_classifier.get_layer(f"fc{i}").units for i in (1, 2)] == [3072, 2048]
    assert [svhn.domain_classifier.get_layer(f"fc{i}").units for i in (1, 2)] == [1024, 1024]
    gtsrb = build_dann((40, 40, 3), 43, network="gtsrb")
    assert gtsrb.feature_extractor.output.shape[-1] == 2 * 2 * 256
    assert [gtsrb.feature_extractor.get_layer(f"conv{i}").filters for i in (1, 2, 3)] == [96, 144, 256]
    assert gtsrb.label_classifier.get_layer("fc1").units == 512
    assert NETWORKS["mnist"].min_input_size() == 16


def test_the_model_refuses_with_value_errors_and_the_data_layer_names_the_flags(data_dir):
    with pytest.raises(ValueError, match=r"unknown network 'lenet'; use one of mnist, svhn, gtsrb, small_resnet"):
        get_network("lenet")
    with pytest.raises(ValueError, match=r"20x20 input is too small for network 'gtsrb', which "
                                         r"needs at least 32x32"):
        build_dann((20, 20, 3), 10, network="gtsrb")
    from config.config import DANNConfig
    from utils.data import builtin_domains
    from utils.data.domains import fill_config

    source, target = builtin_domains(data_dir)
    small = dataclasses.replace(source, train=source.train[:, :20, :20])
    with pytest.raises(UserError, match=r"^--input-shape 20,20,3 is too small for --network "
                                        r"gtsrb, which needs at least 32x32 images; pass a larger "
                                        r"--input-shape \(e.g. 32,32,3\) or another --network$"):
        fill_config(DANNConfig(network="gtsrb", data_dir=data_dir), small, target)


def test_the_mnist_dann_has_its_layers_in_their_order_and_seeded_weights():
    import keras

    keras.utils.set_random_seed(0)
    dann = build_dann()
    assert [layer.name for layer in dann.model.layers] == [
        "images", "feature_extractor", "label_classifier", "domain_classifier"]
    assert [layer.name for layer in dann.feature_extractor.layers] == [
        "images", "mean_subtraction", "conv1", "pool1", "conv2", "pool2", "flatten"]
    assert [weight.path for weight in dann.model.weights] == [
        "mean_subtraction/pixel_mean", "conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias",
        "fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias", "class_logits/kernel",
        "class_logits/bias", "gradient_reversal/grl_lambda", "fc1/kernel", "fc1/bias",
        "domain_logit/kernel", "domain_logit/bias"]
    ends = tuple(float(np.asarray(weight.numpy()).ravel()[-1]) for weight in dann.model.weights
                 if weight.path.endswith("kernel"))
    assert ends == MNIST_SEED_0_KERNEL_ENDS


@dataclasses.dataclass(frozen=True)
class TinyDense(Network):
    """A network that is not a stack of convolutions: one dense layer on the pixels."""

    units: int = 8

    def build(self, images):
        import keras

        flat = keras.layers.Flatten(name="pixels")(images)
        return keras.layers.Dense(self.units, activation="relu", name="dense1")(flat)


def test_a_new_network_is_one_definition_and_one_registry_entry(monkeypatch, data_dir):
    monkeypatch.setitem(NETWORKS, "tiny", TinyDense("tiny", label_units=(6,), domain_units=(5, 4)))
    dann = build_dann((28, 28, 3), 10, network="tiny")
    assert [layer.name for layer in dann.feature_extractor.layers] == [
        "images", "mean_subtraction", "pixels", "dense1", "flatten"]
    assert dann.label_classifier.get_layer("fc1").units == 6
    assert [dann.domain_classifier.get_layer(f"fc{i}").units for i in (1, 2)] == [5, 4]
    logits, domain_logit = dann.model(np.zeros((2, 28, 28, 3), np.uint8))
    assert logits.shape == (2, 10) and domain_logit.shape == (2, 1)
    # The config and the data layer take it by name, as they take the paper's columns.
    from config.config import DANNConfig
    from utils.data import builtin_domains
    from utils.data.domains import fill_config

    config = fill_config(DANNConfig(network="tiny", data_dir=data_dir), *builtin_domains(data_dir))
    assert config.network == "tiny"


def test_small_resnet_has_the_same_parameters_at_any_size_and_group_norm_per_image():
    """Its cost follows the image and its size does not (global average pooling), and each
    image is normalised on its own statistics, so a batch's mix of domains changes nothing."""
    small, large = (build_dann(shape, 3, input_norm="instance", network="small_resnet")
                    for shape in ((48, 48, 1), (100, 80, 1)))
    assert small.model.count_params() == large.model.count_params() < 400_000
    assert small.feature_extractor.output.shape[-1] == 96
    assert any(layer.__class__.__name__ == "GroupNormalization"
               for layer in small.feature_extractor.layers)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 48, 48, 1)).astype(np.uint8)
    alone = small.feature_extractor(images[:1], training=True).numpy()
    mixed = small.feature_extractor(images, training=True).numpy()[:1]
    np.testing.assert_allclose(alone, mixed, rtol=1e-5, atol=1e-5)
    # Any image fits; from 64 pixels up the residual stages start from the same 16x16 grid.
    assert NETWORKS["small_resnet"].min_input_size() == 1
    grids = [build_dann((side, side, 3), 3, network="small_resnet").feature_extractor.get_layer(
        "stage1_conv1").input.shape[1] for side in (32, 64, 128)]
    assert grids == [8, 16, 16]
