"""utils.network_cost: each network's update time, memory and disk per image size."""
import pytest

from utils import network_cost
from utils.io import UserError


def test_a_paper_column_is_timed_at_its_native_size_with_its_files_measured():
    result = network_cost.probe("mnist", 64, updates=1)
    assert result["fits"] and result["runs_at"] == 28
    assert result["params"] > 100_000 and result["ms"] > 0
    # The checkpoint holds the weights and SGD's momentum: about twice the weights file.
    assert 1.5 < result["checkpoint_bytes"] / result["weights_bytes"] < 2.5
    assert network_cost.probe("mobilenet_v3_small", 28, updates=1) == dict(runs_at=28, fits=False)


def test_the_table_lists_each_case_and_the_ratios_to_mnist_at_28():
    cases = {("(none)", 0): dict(peak_bytes=2 ** 29),
             ("mnist", 28): dict(fits=True, runs_at=28, params=205_892, ms=20.0,
                                 peak_bytes=2 ** 30, weights_bytes=2 ** 20, checkpoint_bytes=2 ** 21),
             ("small_resnet", 64): dict(fits=True, runs_at=64, params=340_000, ms=70.0,
                                        peak_bytes=2 ** 30, weights_bytes=2 ** 20,
                                        checkpoint_bytes=2 ** 21),
             ("mobilenet_v3_small", 28): dict(fits=False, runs_at=28)}
    text = network_cost.table([cases])
    assert "| mnist | 28 | 28 | 205,892 | 20.0 | 1024.0 | 1.0 | 2.0 |" in text
    assert "| mobilenet_v3_small | 28 | too small for it |" in text
    assert "- small_resnet at 64 px: 3.5x" in text and "rounds" not in text


def test_rounds_give_median_times_and_the_median_of_the_ratios_within_each_round():
    def case(ms):
        return dict(fits=True, runs_at=28, params=1, ms=ms, peak_bytes=1, weights_bytes=1,
                    checkpoint_bytes=1)

    # A slow second round: both cases slower, their ratio the same.
    rounds = [{("mnist", 28): case(ms), ("small_resnet", 64): case(ms * ratio)}
              for ms, ratio in ((20.0, 3.0), (40.0, 3.5), (20.0, 5.0))]
    text = network_cost.table(rounds)
    assert "| mnist | 28 | 28 | 1 | 20.0 |" in text  # the median of 20, 40 and 20 ms
    assert "- small_resnet at 64 px: 3.5x (rounds: 3.0x, 3.5x, 5.0x)" in text
    assert "(medians over the rounds)" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--networks", "vgg"], "unknown network 'vgg'"),
    (["--sizes", "28,big"], "expected comma-separated pixel sizes"),
    (["--sizes", "4"], "at least 8 pixels"),
    (["--updates", "0"], "at least 1"),
    (["--rounds", "0"], "at least 1"),
])
def test_bad_arguments_are_one_line(argv, fragment):
    with pytest.raises(UserError, match=fragment):
        network_cost.parse_args(argv)
