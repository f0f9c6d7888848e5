"""NETWORKS: the feature extractors a DANN can be built on, by name (the --network choices).

Adding a network is one module defining it (a model.network.Network) and one
entry below: the three columns of the paper's architecture figure
(model/paper_columns.py), drawn for 28-40 pixel images, and a small residual
network for larger ones (model/small_resnet.py). No TensorFlow is imported here.
"""
from model.paper_columns import GTSRB, MNIST, SVHN
from model.small_resnet import SMALL_RESNET

NETWORKS = {network.name: network for network in (
    MNIST,
    SVHN,
    GTSRB,
    SMALL_RESNET,
)}

# The largest side the paper's columns were drawn for (GTSRB resized to 40x40, JMLR 2016).
PAPER_MAX_SIZE = 40


def default_network(input_shape):
    """The column the paper used for inputs of this size: 28x28 digits (mnist), 32x32
    house numbers (svhn), 40x40 traffic signs (gtsrb); above 40 pixels, small_resnet, whose
    parameters do not grow with the image."""
    if max(input_shape[:2]) > PAPER_MAX_SIZE:
        return "small_resnet"
    size = min(input_shape[:2])
    return "mnist" if size < 32 else "svhn" if size < 40 else "gtsrb"


def get_network(name, input_shape=None):
    """The Network registered as `name`, checked against `input_shape` when given.

    Raises ValueError for an unknown name or an input too small for it; the
    layers that talk to the user (config/config.py, utils/data/domains.py)
    check both first and say which flag to change.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; use one of {', '.join(NETWORKS)}")
    network = NETWORKS[name]
    if input_shape is not None and not network.fits(input_shape):
        need = network.min_input_size()
        raise ValueError(f"a {input_shape[0]}x{input_shape[1]} input is too small for network "
                         f"{name!r}, which needs at least {need}x{need} images")
    return network
