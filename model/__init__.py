"""The DANN network of Ganin & Lempitsky (2015): feature extractor G_f, label classifier G_y,
gradient reversal R_lambda and domain classifier G_d.

    model/network.py        the Network type: a G_f and the widths of its heads
    model/networks.py       NETWORKS, the registry of networks by name (--network)
    model/paper_columns.py  the paper's three columns: mnist, svhn, gtsrb
    model/normalisation.py  the input normalisations (mean subtraction, instance)
    model/grl.py            R_lambda
    model/heads.py          G_y and G_d
    model/dann.py           the composition: build_dann and the DANN it returns

The first three need no TensorFlow (the config reads the network names from
them); the rest, which do, are imported on first use of their names. Nothing
here imports from utils/ or config/: errors are ValueErrors, and the layers
that talk to the user turn them into one-line messages.
"""
from model.networks import NETWORKS, default_network, get_network

__all__ = ["DANN", "GradientReversal", "NETWORKS", "build_dann", "default_network", "get_network"]


def __getattr__(name):
    if name in ("DANN", "GradientReversal", "build_dann"):
        from model import dann

        return getattr(dann, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
