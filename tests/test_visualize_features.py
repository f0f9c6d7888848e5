"""utils.visualize_features: side-by-side t-SNE of two runs' features (Fig. 2)."""
import numpy as np
import pytest

from tests.conftest import assert_one_line_failure, png_size, run_script
from utils import visualize_features
from utils.io import UserError


def test_writes_side_by_side_tsne(smoke_runs, tmp_path, capsys):
    out = tmp_path / "tsne.png"
    visualize_features.main(["--source-only-run", "source_only", "--dann-run", "dann",
                             "--output-root", smoke_runs, "--out", str(out), "--num", "30"])
    width, height = png_size(out)
    # Two 7 x 7 inch panels at 100 dpi.
    assert (width, height) == (1400, 700)
    assert out.stat().st_size > 20_000
    assert capsys.readouterr().out.count("t-SNE of 60 points") == 2


def test_subset_is_seeded_and_checked():
    images = np.arange(100).reshape(100, 1)
    test_sets = [(images, images[:, 0] % 10), (images + 1000, images[:, 0] % 10)]
    first = visualize_features.seeded_subset(test_sets, 20, seed=3)
    again = visualize_features.seeded_subset(test_sets, 20, seed=3)
    other = visualize_features.seeded_subset(test_sets, 20, seed=4)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert not np.array_equal(first[0][0], other[0][0])
    assert len(np.unique(first[0][0])) == 20
    with pytest.raises(UserError, match="exceeds the 100 MNIST test images"):
        visualize_features.seeded_subset(test_sets, 101, seed=0)


def test_embedding_is_two_dimensional_and_reproducible():
    features = np.random.default_rng(0).normal(size=(40, 768)).astype(np.float32)
    embedding = visualize_features.embed(features, seed=0)
    assert embedding.shape == (40, 2) and np.all(np.isfinite(embedding))
    assert np.array_equal(embedding, visualize_features.embed(features, seed=0))


@pytest.mark.parametrize("flags, fragment", [
    (["--num", "many"], "invalid int value"),
    (["--num", "1"], "--num must be at least 2"),
])
def test_bad_flags_are_user_errors(flags, fragment):
    with pytest.raises(UserError, match=fragment):
        visualize_features.main(["--source-only-run", "a", "--dann-run", "b", *flags])


def test_missing_run_exits_with_one_line(smoke_runs):
    completed = run_script("-m", "utils.visualize_features", "--source-only-run", "source_only",
                           "--dann-run", "missing", "--output-root", smoke_runs)
    assert completed.returncode == 2
    assert_one_line_failure(completed, "no config at")
