"""The data layer: domains (built-in pickles, image folders, .npz), their splits, and the
tf.data training input.

    utils/data/domains.py   a run's source, target and target test set: SPECs, checks
    utils/data/builtin.py   the built-in `mnist` and `mnist_m` pickles
    utils/data/files.py     image folders and .npz files, decoded once and cached
    utils/data/splits.py    held-out validation splits, seeded subsets, the pixel mean
    utils/data/pipeline.py  the seeded, resumable tf.data stream of training batches

Only the first four are imported here (NumPy only); the pipeline needs TensorFlow.
"""
from utils.data.builtin import (DATA_DIR, MNIST_M_PICKLE, MNIST_PICKLE, builtin_domains, load_mnist_and_mnistm,
                                load_pickle_domain, rebuild_hint, safe_load_pickle,
                                validate_domain)
from utils.data.domains import Domain, load_run_domains
from utils.data.splits import (hold_out, hold_out_source_validation, hold_out_target_validation,
                               pixel_mean, seeded_subset_indices)
