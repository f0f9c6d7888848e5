"""NETWORKS: the feature extractors a DANN can be built on, by name (the --network choices).

Adding a network is one module defining it (a model.network.Network) and one
entry below: the three columns of the paper's architecture figure
(model/paper_columns.py), drawn for 28-40 pixel images, a small residual
network for larger ones (model/small_resnet.py), and keras.applications
backbones that can start from pretrained weights (model/applications.py). No
TensorFlow is imported here.
"""
from model.applications import EFFICIENTNET_B0, MOBILENET_V3_SMALL, RESNET50
from model.paper_columns import GTSRB, MNIST, SVHN
from model.small_resnet import SMALL_RESNET

NETWORKS = {network.name: network for network in (
    MNIST,
    SVHN,
    GTSRB,
    SMALL_RESNET,
    RESNET50,
    EFFICIENTNET_B0,
    MOBILENET_V3_SMALL,
)}

def default_network(input_shape):
    """`mnist` (the paper's MNIST column, at 28x28) below 32 pixels; `small_resnet` from 32 up.

    The paper's other columns stay a --network away, at their own sizes: `svhn` costs
    15x `mnist` an update at 32x32 (33 M parameters) and `gtsrb` 20x at 48x48, where
    `small_resnet` costs 2-4x and scored as well or better on the sources' held-out
    images (docs/own-domains.md, "How the defaults were chosen").
    """
    return "mnist" if min(input_shape[:2]) < 32 else "small_resnet"


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
