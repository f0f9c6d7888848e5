"""The two heads on G_f's features (Ganin & Lempitsky, 2015, Sec. 3 and 5.2): the label
predictor G_y and, behind R_lambda, the domain classifier G_d. Their hidden widths come from
the network (model/network.py); both end in float32 logits."""
import keras

from model.grl import GradientReversal


def build_label_classifier(feature_dim, num_classes, hidden_units=(100, 100)):
    """G_y: FC ReLU layers fc1, fc2, ... of `hidden_units`, then the class logits (`mnist`:
    FC100, ReLU, FC100, ReLU, FC10)."""
    features = keras.Input(shape=(feature_dim,), name="features")
    x = features
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    # float32 logits under any policy: the losses and softmaxes read them.
    logits = keras.layers.Dense(num_classes, name="class_logits", dtype="float32")(x)
    return keras.Model(features, logits, name="label_classifier")


def build_domain_classifier(feature_dim, hidden_units=(100,)):
    """G_d behind R_lambda: GRL, FC ReLU layers fc1, ... of `hidden_units`, one logit
    (target = 1) (`mnist`: GRL, FC100, ReLU, logit)."""
    features = keras.Input(shape=(feature_dim,), name="features")
    x = GradientReversal(name="gradient_reversal")(features)
    for index, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{index}")(x)
    logit = keras.layers.Dense(1, name="domain_logit", dtype="float32")(x)
    return keras.Model(features, logit, name="domain_classifier")
