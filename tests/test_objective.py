"""The objective (utils/training/objective.py): a registered term is trained and logged with no
other edit, loss/total_loss is the loss minimised, and each tag says which domain it measures."""
import numpy as np
import pytest
import tensorflow as tf

from tests.test_training import tiny_config
from utils.data import builtin_domains
from utils.summaries import read_scalars
from utils.training import objective
from utils.training.loop import Trainer

ADAPTATION, REFINE = 6, 4


class ToyTerm:
    """A recipe term of the test's own: half the mean squared target logit."""

    def __init__(self, global_target_batch):
        self.global_target_batch = global_target_batch

    def __call__(self, target_images, target_logits, step):
        return 0.5 * tf.nn.compute_average_loss(tf.reduce_mean(tf.square(target_logits), axis=1),
                                                global_batch_size=self.global_target_batch)


@pytest.fixture(scope="module")
def toy_run(data_dir, tmp_path_factory):
    """A tiny run with the toy term registered, 6 adaptation and 4 refinement updates."""
    with pytest.MonkeyPatch.context() as patch:
        # The one registry line a new term needs.
        patch.setitem(objective.TARGET_TERMS, "toy",
                      lambda config, context: ToyTerm(context.global_target_batch))
        config = tiny_config(data_dir, refine_steps=REFINE, refine_interval=3, ema_decay=0.9,
                             tensorboard_extras=False, run_name="toy")
        trainer = Trainer(config, *builtin_domains(data_dir),
                          output_root=str(tmp_path_factory.mktemp("toy")))
        trainer.fit(show_progress=False)
    return trainer, read_scalars(trainer.dirs["logs"])


def values(points):
    return np.array([value for _, value in points])


def test_a_registered_term_is_trained_and_logged_with_no_other_edit(toy_run):
    trainer, scalars = toy_run
    assert list(trainer.objective.target_terms) == ["toy"]
    train = scalars["train"]
    # Logged for every window of the adaptation phase, none of the refinement's.
    assert [step for step, _ in train["loss/toy"]] == list(range(1, ADAPTATION + 1))
    assert all(value > 0 for value in values(train["loss/toy"]))


def test_total_loss_is_the_objective_minimised_in_each_phase(toy_run):
    trainer, scalars = toy_run
    train = {tag: dict(points) for tag, points in scalars["train"].items()}
    assert sorted(train["loss/total_loss"]) == list(range(1, ADAPTATION + REFINE + 1))
    config = trainer.config
    for step in range(1, ADAPTATION + 1):
        # One update per window (log_every_steps 1): L_y + w_d L_d + the recipe's terms.
        expected = (train["loss/label_loss"][step] + config.domain_loss_weight
                    * train["loss/domain_loss"][step] + train["loss/toy"][step])
        assert train["loss/total_loss"][step] == pytest.approx(expected, rel=1e-5)
    for step in range(ADAPTATION + 1, ADAPTATION + REFINE + 1):
        # Eq. 14: the refinement's three terms, logged unweighted, with their weights.
        expected = (config.refine_kl_weight * train["loss/refine_kl"][step]
                    + config.refine_entropy_weight * train["loss/refine_entropy"][step]
                    + config.refine_vat_weight * train["loss/refine_vat"][step])
        assert train["loss/total_loss"][step] == pytest.approx(expected, rel=1e-4)


def test_accuracy_tags_name_their_domain_and_the_log_line_keeps_its_fields(toy_run):
    trainer, scalars = toy_run
    train, validation = scalars["train"], scalars["validation"]
    # The labelled half is the source's; acc/label_acc is kept with its meaning in both writers.
    assert train["acc/source_label_acc"] == train["acc/label_acc"]
    assert "acc/target_label_acc" not in train
    assert validation["acc/target_label_acc"] == validation["acc/label_acc"]
    lines = open(f"{trainer.dirs['logs']}/log.txt").read().splitlines()
    fields = [part.split("=")[0] for part in lines[-1].split(" | ")[1].split()]
    assert fields == ["label_loss", "domain_loss", "total_loss", "label_acc", "domain_acc",
                      "source_label_acc", "target_val_acc"]


def test_objective_terms_are_what_the_step_differentiates(data_dir, tmp_path):
    """loss_terms at a step: label, domain and the recipe's terms, their sum the step's loss."""
    trainer = Trainer(tiny_config(data_dir, entropy_weight=0.5, entropy_start=0.0,
                                  run_name="terms"),
                      *builtin_domains(data_dir), output_root=str(tmp_path))
    batch = tuple(tf.constant(a[:4]) for a in trainer.train_images)
    batch = (batch[0], tf.cast(batch[1], tf.int32), batch[2])
    step = tf.constant(3, tf.int64)
    terms = trainer.objective.loss_terms(batch, step)
    assert list(terms) == ["label", "domain", "entropy"]
    entropy = trainer.objective.target_terms["entropy"]
    assert float(entropy.weight_at(3)) > 0
    total = float(trainer.objective.total(terms))
    assert total == pytest.approx(sum(float(value) for value in terms.values()), rel=1e-6)
