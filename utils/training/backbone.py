"""A pretrained backbone (model/applications.py): its starting weights, its learning rate and
its batch-norm statistics.

  --backbone-weights     none, `imagenet` (Keras fetches and caches them) or a local file:
                         the one Keras caches in ~/.keras/models/, or a .weights.h5 saved
                         from the same application built without its top. Checked before
                         the run writes anything (`check_weights`): a missing, truncated or
                         foreign file is one line and exit 2.
  --backbone-lr-mult     the backbone learns at this times the heads' rate: its gradients
                         are scaled before SGD applies them (with momentum, the same as a
                         per-layer rate). 0.1: the pretrained layers at a tenth of the rate
                         of the layers trained from scratch, as in Long et al. (DAN, ICML
                         2015, Sec. 4) and the DANN examples of the Transfer-Learning-
                         Library (its backbone's parameter group at 0.1).
  --freeze-backbone-bn   the backbone's batch-norm layers keep their (pretrained) statistics
                         and scales: not trainable, so Keras runs them in inference mode.
"""
import os

from utils.io import UserError


def backbone_of(dann):
    """The backbone layer of G_f, or None for a network without one."""
    try:
        return dann.feature_extractor.get_layer("backbone")
    except ValueError:
        return None


def _load(backbone, network, spec, input_shape):
    """Loads `spec` (imagenet or a file) into `backbone`; a UserError says what is wrong."""
    if spec == "imagenet":
        try:
            pretrained = network.backbone(input_shape, weights="imagenet")
        except Exception as error:  # no network, or no such weights for this size
            raise UserError(f"--backbone-weights imagenet: Keras could not fetch the ImageNet "
                            f"weights of {network.constructor} ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:160]}); pass a local file instead")
        backbone.set_weights(pretrained.get_weights())
        return
    if not os.path.isfile(spec):
        raise UserError(f"--backbone-weights {spec}: no such file; pass a .weights.h5 saved from "
                        f"keras.applications.{network.constructor}(include_top=False), the "
                        "file Keras caches in ~/.keras/models/, or imagenet")
    try:
        backbone.load_weights(spec)
    except Exception as error:  # h5py's OSError for a cut file, ValueError for another network
        reason = " ".join(str(error).split())[:200]
        raise UserError(f"--backbone-weights {spec} cannot be loaded into {network.name} "
                        f"({type(error).__name__}: {reason}); it must hold the weights of "
                        f"keras.applications.{network.constructor}(include_top=False), whole")


def check_weights(config):
    """Loads --backbone-weights into a backbone built alone, before the run writes anything."""
    from model import get_network

    network = get_network(config.network)
    if not getattr(network, "raw_pixels", False):
        raise UserError(f"--backbone-weights is for the keras.applications networks "
                        f"(resnet50, efficientnet_b0, mobilenet_v3_small), not {config.network}")
    _load(network.backbone(config.input_shape), network, config.backbone_weights,
          config.input_shape)


def prepare(dann, config):
    """The backbone's starting weights and frozen batch norm, before any copy or optimizer
    is made of the model."""
    from model import get_network

    backbone = backbone_of(dann)
    if backbone is None:
        return
    if config.backbone_weights:
        _load(backbone, get_network(config.network), config.backbone_weights,
              config.input_shape)
    freeze_batch_norm(dann, config)


def freeze_batch_norm(dann, config):
    """With --freeze-backbone-bn, the backbone's batch-norm layers in `dann` are not trainable
    (Keras then runs them in inference mode). Applied to every copy of the network (the weight
    average's, the teacher's), so that the evaluated one says it too."""
    backbone = backbone_of(dann)
    if backbone is None or not config.freeze_backbone_bn:
        return
    import keras

    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def gradient_scales(dann, variables, multiplier):
    """One factor per variable of `variables`: `multiplier` for the backbone's, else 1; None
    when every factor is 1."""
    backbone = backbone_of(dann)
    if backbone is None or multiplier == 1.0:
        return None
    inside = {id(variable) for variable in backbone.trainable_variables}
    return [multiplier if id(variable) in inside else 1.0 for variable in variables]
