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
    """`mnist`, the paper's MNIST column, on images resized to its 28x28, whatever their size.

    Chosen on the validation splits of the own-domains suite (docs/own-domains.md, "How the
    defaults were chosen"): on 48x48 and 64x64 shapes, DANN on `small_resnet` oscillated
    (target validation accuracy 0.40 on both, where the same pairs' source-only runs were
    far above it), and DANN on `mnist` at 28x28 did not (0.91 and 0.73), at a sixth of the
    cost. `small_resnet`, `svhn`, `gtsrb` and the keras.applications backbones are a
    --network away.
    """
    return "mnist"


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
