"""The DANN network: feature extractor, label classifier, gradient reversal, domain classifier."""
from model.dann import DANN, GradientReversal, build_dann

__all__ = ["DANN", "GradientReversal", "build_dann"]
