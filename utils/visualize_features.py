"""t-SNE of the feature extractor's output, source-only vs DANN, as in Fig. 2 of
Ganin & Lempitsky (2015): source test images (MNIST) in blue, target test images
(MNIST-M) in red, each point drawn as its class (a dot for classes with long
names or no labels). Adaptation should mix the two colours.

    python -m utils.visualize_features --source-only-run <run> --dann-run <run>
        [--out logs/<dann run>/figures/tsne.png] [--num 2000] [--seed 0]

Both models embed the same seeded subset of --num images per domain. Features
are reduced to 50 dimensions with PCA before t-SNE, the usual way to make
t-SNE fast on wide features (G_f outputs 768 values per image).
"""
import os
import time

import numpy as np

from utils.io import ArgumentParser, UserError, run_main
from utils.runs import (add_output_root_argument, check_same_data, find_run,
                        load_test_sets)

PCA_DIMENSIONS = 50
# Half of sklearn's default 1000 iterations and a coarser Barnes-Hut angle than
# its 0.5: the layout of a few thousand points has settled by then, and each
# embedding of 2000 + 2000 points costs about 12 s of CPU instead of about 45 s.
TSNE_ITERATIONS = 500
TSNE_ANGLE = 0.8
DOMAIN_COLOURS = ("tab:blue", "tab:red")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-only-run", required=True,
                        help="run trained with --mode source_only")
    parser.add_argument("--dann-run", required=True, help="run trained with --mode dann")
    add_output_root_argument(parser, "folder holding checkpoints/, config/ and logs/ (default: .)")
    parser.add_argument("--out", help="PNG to write (default: OUTPUT_ROOT/logs/<dann run>/figures/"
                                      "tsne.png; the README's figure is --out image/tsne.png)")
    parser.add_argument("--num", type=int, default=2000,
                        help="test images per domain (default: 2000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the image subset and of t-SNE (default: 0)")
    parser.add_argument("--data-dir",
                        help="dataset folder (default: the one in --source-only-run's config)")
    return parser.parse_args(argv)


def domain_names(config):
    """(source, target) as the figure names them: MNIST, MNIST-M, or the folder names."""
    from utils.data.domains import describe_spec

    return tuple(describe_spec(spec) for spec in (config.source, config.target_test or config.target))


def seeded_subset(test_sets, num, seed, names=("MNIST", "MNIST-M")):
    """The same `num` random test images (and labels, -1 when unknown) of each domain for
    every model."""
    rng = np.random.default_rng(seed)
    subsets = []
    for (images, labels), name in zip(test_sets, names):
        if images is None:
            raise UserError(f"the target {name} has no test images to embed; train with "
                            "--target-test, or give the target a test/ folder")
        if labels is None:
            labels = np.full(len(images), -1)
        if num > len(images):
            raise UserError(f"--num {num} exceeds the {len(images)} {name} test images; "
                            f"pass --num {len(images)} or less")
        chosen = np.sort(rng.choice(len(images), size=num, replace=False))
        subsets.append((images[chosen], labels[chosen]))
    return subsets


def embed(features, seed):
    """2-D t-SNE of `features` (PCA to 50 dimensions first)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    reduced = PCA(n_components=min(PCA_DIMENSIONS, *features.shape),
                  random_state=seed).fit_transform(features)
    # sklearn requires perplexity < n_samples; 30 is its default for large sets.
    perplexity = min(30.0, (len(features) - 1) / 3)
    # One thread: on a 2-core CPU shared with training, t-SNE's OpenMP threads waiting
    # on each other made it 3x slower than a single thread (50 s against 17 s).
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=TSNE_ITERATIONS,
                    angle=TSNE_ANGLE, random_state=seed, n_jobs=1).fit_transform(reduced)


def plot_embeddings(panels, domains, labels, path, names=("MNIST", "MNIST-M"), class_names=None):
    """One panel per (title, embedding); colour is the domain, the marker the class."""
    from matplotlib.lines import Line2D

    from utils.figures import new_figure, save_png

    styles = tuple(zip(names, DOMAIN_COLOURS))
    legend = [Line2D([], [], linestyle="", marker="s", color=colour, label=f"{name} test")
              for name, colour in styles]
    title = f"t-SNE of feature-extractor outputs ({names[0]}: blue, {names[1]}: red)"
    figure, axes = new_figure(len(panels), panel_size=(7.0, 7.0), title=title)
    for axis, (title, embedding) in zip(axes, panels):
        for domain, (name, colour) in enumerate(styles):
            for label in np.unique(labels[domains == domain]):
                points = embedding[(domains == domain) & (labels == label)]
                text = str(label) if class_names is None or label < 0 else class_names[label]
                marker = f"${text}$" if label >= 0 and len(text) <= 2 else "."
                axis.scatter(points[:, 0], points[:, 1], marker=marker, s=30, c=colour,
                             alpha=0.6, linewidths=0)
        axis.set(title=title, xticks=[], yticks=[])
        axis.legend(handles=legend, loc="upper right")
    return save_png(figure, path)


def main(argv=None):
    args = parse_args(argv)
    if args.num < 2:
        raise UserError(f"--num must be at least 2, got {args.num}")
    # Both runs must exist before the slow imports and the data load.
    runs = (("source-only", find_run(args.source_only_run, args.output_root)),
            ("DANN", find_run(args.dann_run, args.output_root)))
    out = args.out or os.path.join(args.output_root, "logs", args.dann_run, "figures", "tsne.png")

    check_same_data({run.name: run.config for _, run in runs})
    config = runs[0][1].config
    test_sets = load_test_sets(config, args.data_dir)
    names = domain_names(config)
    subsets = seeded_subset(test_sets, args.num, args.seed, names)
    images = np.concatenate([images for images, _ in subsets])
    labels = np.concatenate([labels for _, labels in subsets])
    domains = np.repeat([0, 1], args.num)
    from utils.training.evaluation import apply_in_batches, inference

    panels = []
    for kind, run in runs:
        config, dann = run.config, run.load_model()
        features = apply_in_batches(inference(dann.feature_extractor), images,
                                    config.eval_batch_size)
        start = time.perf_counter()
        embedding = embed(features, args.seed)
        print(f"{kind} run {run.name}: t-SNE of {len(features)} points took "
              f"{time.perf_counter() - start:.1f} s")
        panels.append((f"{kind}: {run.name} ({config.mode})", embedding))
    print(f"wrote {plot_embeddings(panels, domains, labels, out, names, config.class_names)}")


if __name__ == "__main__":
    run_main(main)
