"""What a run trains and how: the network and its copies, the optimizers, and one train step
per phase.

The adaptation phase minimises the DANN objective (utils/training/objective.py)
with SGD on the learning-rate schedule of Ganin & Lempitsky (2015), Sec. 5.2.2;
a `refined` run then minimises DIRT-T's refinement objective with Adam
(utils/training/refinement.py). Both phases update the same network through
the one train step (utils/training/step.py), and share the global step, the
NaN record, the objective window and the weight average (a recipe component,
utils/training/weight_average.py, evaluated and saved in place of the raw weights).
"""
import keras

from model import build_dann
from utils.data import pixel_mean
from utils.summaries import write_scalars
from utils.training import backbone, precision, schedules
from utils.training.objective import Objective
from utils.training.refinement import Refinement
from utils.training.step import TrainStep, divergence_variable, global_step_variable
from utils.training.weight_average import WeightAverage
from utils.training.window_sums import ObjectiveWindow


class Phases:
    """The trained state of a run and its train steps, built under `strategy`'s scope and the
    config's precision policy (utils/training/prepare.py gives `data`).

    `steps` maps a phase name ("adaptation", and "refinement" when the run has one)
    to its TrainStep; `step_at(t)` is the one of the update at global step t.
    """

    def __init__(self, config, data, strategy):
        self.config = config
        # Every model of the run is built under its precision's policy (float32 variables).
        with strategy.scope(), precision.policy(config.precision):
            mean = pixel_mean(data.source_pool["images"], data.target_pool["images"])
            # The network, then the copies the recipe needs, in this order (each draws its
            # initial weights from the seeded generator): the average's and the teacher's.
            copies = [build_dann(config.input_shape, config.num_classes, mean, config.input_norm,
                                 config.network)
                      for _ in range(1 + (config.ema_decay > 0) + (config.refine_steps > 0))]
            self.dann = copies.pop(0)
            backbone.prepare(self.dann, config)  # before the average copies it
            for copy in copies:
                backbone.freeze_batch_norm(copy, config)
            self.learning_rate = schedules.AnnealedLearningRate(
                config.learning_rate, config.lr_alpha, config.lr_beta, config.adaptation_steps)
            # Clipping the global gradient norm bounds what one batch can do to the weights
            # (and, through the momentum, to the next updates); None leaves SGD as it is.
            self.optimizer = precision.wrap_optimizer(
                keras.optimizers.SGD(self.learning_rate, momentum=config.momentum,
                                     global_clipnorm=config.clip_norm or None), config.precision)
            self.optimizer.build(self.dann.model.trainable_variables)
            self.weight_average = (WeightAverage(self.dann.model, copies.pop(0).model,
                                                 config.ema_decay) if config.ema_decay > 0 else None)
            # The model that is evaluated and saved: the weight average when there is one.
            self.eval_model = (self.weight_average.averaged if self.weight_average
                               else self.dann.model)
            # The refinement phase after adaptation (DIRT-T), with its own teacher and optimizer.
            self.refinement = (Refinement(config, self.dann, self.eval_model, copies.pop(0).model,
                                          data.half_batch) if config.refine_steps > 0 else None)
            self.objective = Objective(config, self.dann, data.labelled_domain, data.half_batch,
                                       self.weight_average.averaged if self.weight_average else None)
            self.global_step, self.diverged_at = global_step_variable(), divergence_variable()
            self.window = ObjectiveWindow(self.objective.logged_terms)
        shared = (self.global_step, self.diverged_at, self.window, self.weight_average)
        scales = backbone.gradient_scales(self.dann, self.objective.trained_variables,
                                          config.backbone_lr_mult)
        self.steps = {"adaptation": TrainStep(strategy, self.objective, self.optimizer, *shared,
                                              gradient_scales=scales)}
        if self.refinement:
            self.steps["refinement"] = TrainStep(strategy, self.refinement,
                                                 self.refinement.optimizer, *shared,
                                                 count_skipped=False)

    def refining(self, step):
        """Whether the update at `step` belongs to the refinement phase."""
        return self.refinement is not None and step >= self.config.adaptation_steps

    def step_at(self, step):
        """The TrainStep of the update at `step`."""
        return self.steps["refinement" if self.refining(step) else "adaptation"]

    def hyperparameters(self, step):
        """The learning rate and lambda_p of the update at `step` (pure functions of the step):
        in the refinement phase, its Adam's rate and 0 (it has no domain loss)."""
        if self.refining(step):
            return {"hyperparameter/learning_rate": self.config.refine_learning_rate,
                    "hyperparameter/grl_lambda": 0.0}
        return {"hyperparameter/learning_rate": self.learning_rate(step),
                "hyperparameter/grl_lambda": self.objective.grl_lambda_at(step)}

    def write_windows(self, writer, step):
        """Writes the running means of the logging window that ends at `step`, then starts a
        new one: the adaptation's metrics, the objective as minimised and the refinement's
        terms, each when its window had an update of its phase (one across the boundary
        has both)."""
        windows = [self.objective.metrics, self.window]
        for window in windows + ([self.refinement.metrics] if self.refinement else []):
            write_scalars(writer, window.result(), step)
            window.reset_state()

    def checkpoint_objects(self):
        """{name: trackable} of the trained state, by the names checkpoints hold them under."""
        objects = dict(model=self.dann.model, optimizer=self.optimizer,
                       metrics=self.objective.metrics, diverged_at=self.diverged_at)
        if self.weight_average:
            objects["averaged_model"] = self.eval_model
        if self.refinement:
            objects["refinement"] = self.refinement
        objects.update(step=self.global_step, objective_window=self.window)
        return objects
