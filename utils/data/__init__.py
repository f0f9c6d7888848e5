"""The data layer: domains (built-in pickles, image folders, .npz), their splits, and the
tf.data training input.

    utils/data/domain.py    the Domain type, which every module below takes or returns
    utils/data/formats.py   the one loader of a SPEC: a registry of formats, one module each:
      utils/data/builtin.py   the built-in `mnist` and `mnist_m` pickles
      utils/data/files.py     image folders, decoded once and cached
      utils/data/npz.py       .npz files in the layout of Keras' mnist.npz
    utils/data/domains.py   a run's source, target and target test set, checked together
    utils/data/splits.py    held-out validation splits, seeded subsets, the pixel mean
    utils/data/pipeline.py  the seeded, resumable tf.data stream of training batches

Imports run one way: domain.py <- the formats <- formats.py <- domains.py. All but the
pipeline load with this package (NumPy only at import); the pipeline needs TensorFlow.
Modules of this package import each other by their full names (`utils.data.files`), never
through this package, which imports them.
"""
from utils.data.builtin import (DATA_DIR, MNIST_M_PICKLE, MNIST_PICKLE, builtin_domains,
                                load_mnist_and_mnistm, load_pickle_domain, rebuild_hint,
                                safe_load_pickle, validate_domain)
from utils.data.domain import Domain
from utils.data.domains import load_run_domains
from utils.data.splits import (hold_out, hold_out_source_validation, hold_out_target_validation,
                               pixel_mean, seeded_subset_indices)
