"""The DANN network: feature extractor, label classifier, gradient reversal, domain classifier,
in one of the paper's three architectures (model/networks.py).

model.networks needs no TensorFlow (the config reads the network names from it);
model.dann, which does, is imported on first use of its names.
"""
from model.networks import NETWORKS, default_network, get_network

__all__ = ["DANN", "GradientReversal", "NETWORKS", "build_dann", "default_network", "get_network"]


def __getattr__(name):
    if name in ("DANN", "GradientReversal", "build_dann"):
        from model import dann

        return getattr(dann, name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
