"""The DANN training loop: the Trainer wires the run's parts and orders them in time.

Ganin & Lempitsky (2015), Sec. 3.2-3.3 and 5.2.2: stochastic updates of the DANN
objective on the paper's learning-rate and lambda schedules (deviations from the
paper: config/config.py). Built elsewhere (utils/training/__init__.py lists them):
the data splits, the phases with their objectives and train steps, evaluation,
the checkpoint and clock, the guards, the results. The Trainer keeps `fit`: the
cadence of updates, logging windows, validation points and checkpoints, the stop
signals and the rollbacks.
"""
import os
import time

from tqdm import tqdm

from utils.data.domains import fill_config
from utils.device import describe_device
from utils.io import ensure_writable_dir
from utils.runs import run_dirs
from utils.summaries import append_log_line, create_writers, write_scalars
from utils.training.checkpoints import checkpoint_path, disk_line
from utils.training.collapse_guard import Collapsed
from utils.training.distribute import Agreement, create_strategy
from utils.training.evaluation import Evaluator
# Diverged and Interrupted end fit(); the entry script imports them from here.
from utils.training.guards import Diverged, Guards  # noqa: F401
from utils.training.phases import Phases
from utils.training.prepare import prepare, training_stream
from utils.training.results import Results
from utils.training.state import RunClock, RunState, forget_after
from utils.training.stop_signals import Interrupted, StopSignals  # noqa: F401


def _next_multiple(step, every):
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


class Trainer:
    """One run: its data, phases, guards, evaluation, checkpoint and results, wired together.

    `source` and `target` are Domains (utils/data/domains.py). `resume_root` is the
    output root of the run a resume reads (its checkpoints and rollback record) when
    it is not `output_root`: a multi-worker run's worker writes to a temporary
    folder but resumes from the chief's run (utils/training/distribute.py).
    """

    def __init__(self, config, source, target, output_root=".", strategy=None,
                 resume_root=None):
        self.config = config = fill_config(config, source, target)
        self.dirs = run_dirs(output_root, config.run_name)
        self.resume_dirs = run_dirs(resume_root, config.run_name) if resume_root else self.dirs
        self.checkpoints_from = self.resume_dirs["checkpoints"]
        self.strategy = strategy or create_strategy(config.strategy)
        # Stop, collapse and wall-time checkpoint decisions, made the same in every worker.
        self.agree = Agreement(self.strategy)
        self.data = data = prepare(config, source, target)
        self.half_batch, self.train_images = data.half_batch, data.train_images
        self.source_val, self.target_val, self.test_sets = (data.source_val, data.target_val,
                                                            data.test_sets)
        self.phases = phases = Phases(config, data, self.strategy)
        self.dann, self.optimizer, self.objective = phases.dann, phases.optimizer, phases.objective
        self.refinement, self.eval_model = phases.refinement, phases.eval_model
        self.global_step, self.diverged_at = phases.global_step, phases.diverged_at
        self.guards = Guards(config, self.dann, *self.train_images[:2], self.diverged_at,
                             self.agree, self.dirs["logs"])
        self.collapse_guard, self.rollbacks = self.guards.collapse_guard, self.guards.rollbacks
        with self.strategy.scope():
            self.clock = RunClock()
        objects = dict(phases.checkpoint_objects(), clock=self.clock)
        if self.rollbacks:
            objects["rollbacks"] = self.rollbacks
        # What a checkpoint written by earlier code may lack (utils/training/state.py).
        self.state = RunState(objects, self.dirs["checkpoints"], config.max_to_keep,
                              self.global_step, self.clock,
                              optional={"rollbacks": None, "step": None, "objective_window": None,
                                        "refinement": config.adaptation_steps},
                              every_seconds=config.checkpoint_every_seconds, agree=self.agree)
        self.results = Results(config, self.dirs, self.clock, self.rollbacks, self.eval_model,
                               self.test_sets)
        self.disk_line = disk_line(objects, self.eval_model, config.max_to_keep,
                                   config.keep_checkpoints_at_end)
        self.evaluator = Evaluator(self.eval_model, data, config)
        self.predict = self.evaluator.predict
        # Label-free model selection: scored from the source validation split, the source
        # pool and unlabelled target *training* images, never the target's test set.
        self.validators = None
        if config.source_val_size > 0:
            from utils.validators import ValidatorSuite

            self.validators = ValidatorSuite(
                data.source_val, data.source_pool["images"], data.target_pool["images"],
                self.evaluator.outputs, self.dirs["logs"], self.dirs["checkpoints"],
                seed=config.target_val_seed, batch_size=config.eval_batch_size)

    @property
    def step(self):
        """Global step: the number of updates applied so far (survives resume)."""
        return int(self.global_step.numpy())

    def refining(self, step):
        """Whether the update at `step` belongs to the refinement phase."""
        return self.phases.refining(step)

    def make_dataset(self, start_step=None):
        """The distributed input stream from `start_step` (default: the run's step, past any
        batches a rollback skipped; utils/training/prepare.py)."""
        if start_step is None:
            start_step = self.step + (int(self.rollbacks.data_offset.numpy()) if self.rollbacks else 0)
        return training_stream(self.data, self.config, start_step, self.refining(self.step),
                               self.strategy)

    def evaluate(self, whole=True):
        """The validation scalars of the evaluated model (utils/training/evaluation.py)."""
        return self.evaluator.evaluate(whole)

    def last_good_checkpoint(self):
        """The newest checkpoint this run wrote, or else the one it resumed from."""
        return self.state.last_good_checkpoint()

    def save_checkpoint(self):
        """Writes ckpt-<step> unless the run diverged or collapsed (utils/training/guards.py)."""
        self.guards.check_finite(self.last_good_checkpoint())
        self.guards.check_collapse(self.step, self.last_good_checkpoint())
        return self.state.save()

    def restore(self, resume_from=None):
        """Restores the newest intact checkpoint of the run it resumes, or `resume_from`, and
        the rollback record that goes with it; returns its path (None: there is none)."""
        restored = self.state.restore_newest(self.checkpoints_from, resume_from)
        if self.rollbacks:
            # A worker's own folder is new: the run's record of rollbacks is the chief's.
            self.rollbacks.adopt(self.resume_dirs["logs"])
            self.rollbacks.sync(self.step)
        return restored

    def fit(self, resume=False, show_progress=True, resume_from=None, command=None,
            collapsed=None):
        """Trains to `config.total_steps`; returns the results dict (also results.json).

        Training scalars are written every `log_every_steps` steps, validation
        every `eval_every_steps` and at the end, checkpoints every
        `checkpoint_every_steps`, at each epoch end and every
        `checkpoint_every_seconds`. SIGINT/SIGTERM stop the run after the current
        update with a checkpoint of that exact step; `resume=True` continues from
        the newest intact checkpoint and logs every step after it once.
        `collapsed` (a Collapsed) resumes a run that stopped on that collapse
        (`--on-collapse stop`) as a rollback, skipping the batches since its newest
        checkpoint.
        """
        config = self.config
        for folder in self.dirs.values():
            ensure_writable_dir(folder)
        if resume:
            restored = self.restore(resume_from)
            if restored:
                print(f"resuming from {restored} at step {self.step}", flush=True)
            else:
                print(f"no intact checkpoint in {self.checkpoints_from}: starting run "
                      f"{config.run_name!r} from step 0", flush=True)
            forget_after(self.dirs["logs"], self.step, self.validators)
            if collapsed is not None:
                append_log_line(self.dirs["logs"], self.guards.resume_collapsed(
                    collapsed, self.step, config.run_name))
                # Only now that the rollback is on record (a worker has no results to remove).
                if os.path.exists(self.results.path):
                    os.remove(self.results.path)
        print(self.disk_line, flush=True)
        config.save(self.dirs["config"], device=describe_device())
        writers = create_writers(self.dirs["logs"])
        # Timing of this session, added to what the checkpoint says earlier sessions took.
        self.clock.start_session()
        with StopSignals(self.agree) as stop:
            bar = tqdm(initial=self.step, total=config.total_steps, desc=config.run_name,
                       disable=not show_progress, leave=False, mininterval=1.0)
            try:
                while True:
                    try:
                        validation = self._train_to_end(writers, stop, bar)
                        self.guards.check_collapse(self.step, self.last_good_checkpoint())
                        break
                    except Collapsed as collapse:
                        refusal = self.guards.refusal(collapse)
                        if refusal == "stop":
                            raise
                        if refusal:
                            raise Collapsed(collapse.step, collapse.what,
                                            collapse.last_good_checkpoint, refusal) from None
                        for writer in writers.values():
                            writer.close()
                        line = self.rollbacks.roll_back(collapse, self.state, self.validators)
                        writers.update(create_writers(self.dirs["logs"]))
                        append_log_line(self.dirs["logs"], line)
                        if stop.stopping():
                            # The restored checkpoint is on disk and the rollback recorded.
                            raise stop.interrupted()
                        bar.reset(total=config.total_steps)
                        bar.update(self.step)
            except Collapsed as collapse:
                self.results.collapsed(self.step, self.evaluate(), collapse)
                raise
            finally:
                # Cleared before any error is printed, so that it stands on a line of its own.
                bar.close()
                for writer in writers.values():
                    writer.flush()
        # The loop ends with a whole-set validation of the final step: reuse it
        # (a run resumed when already finished has none and evaluates once).
        results = self.results.finish(self.step, validation or self.evaluate(), command)
        # Only once the run's results are on disk: until then a crash may need them.
        self.state.keep_newest(config.keep_checkpoints_at_end)
        return results

    def _train_to_end(self, writers, stop, bar):
        """Trains, validates and checkpoints from the current step to the last; returns the
        final validation (None when there was nothing left to train)."""
        config = self.config
        validation = None
        refining = self.refining(self.step)
        iterator = iter(self.make_dataset())
        while self.step < config.total_steps:
            if self.refining(self.step) != refining:
                # The refinement phase begins: its own input stream.
                refining, iterator = True, iter(self.make_dataset())
            # Train up to the next validation point, epoch end or phase end, whichever is first.
            stop_at = min(_next_multiple(self.step, config.eval_every_steps),
                          _next_multiple(self.step, config.steps_per_epoch), config.total_steps)
            if not refining and self.refinement:
                stop_at = min(stop_at, config.adaptation_steps)
            seconds, steps, stopping = self.train_until(stop_at, iterator, writers, stop, bar)
            self.clock.add_training(seconds, steps)
            step = self.step
            if step == config.total_steps and step % config.log_every_steps:
                self.phases.write_windows(writers["train"], step)  # the last, shorter window
            # The end of the adaptation phase before a refinement is validated on the whole
            # sets and checkpointed, like the end of the run: it is a result of its own.
            phase_end = self.refinement is not None and step == config.adaptation_steps
            if step == stop_at:
                if step % config.eval_every_steps == 0 or step == config.total_steps or phase_end:
                    validation = self.validate(writers, whole=step == config.total_steps or phase_end)
                if step % config.steps_per_epoch == 0 or phase_end or self._checkpoint_due(step):
                    self.save_checkpoint()
            if stopping and step < config.total_steps:
                if self.state.manager.latest_checkpoint != checkpoint_path(self.dirs["checkpoints"], step):
                    self.save_checkpoint()
                raise stop.interrupted()
        return validation

    def train_until(self, last_step, iterator, writers, stop=None, bar=None):
        """Runs updates up to `last_step`, or until `stop` (StopSignals) says to: the real
        loop, with the NaN check, the training scalars and the checkpoints at their cadence.

        Returns (seconds, steps, stopping): the time and steps timed from the start
        of the first call, or from its end when that call traced the step, so the
        one-time tracing stays out of ms/step while a short run is still timed, and
        whether a stop signal was agreed. Only every `log_every_steps` does Python wait for
        the device (the NaN check and the training scalars), keeping the loop async.
        """
        config = self.config
        timed_from = None
        step = self.step
        stopping = False
        while step < last_step and not stopping:
            if step % config.log_every_steps == 0:
                self.guards.check_finite(self.last_good_checkpoint())
                write_scalars(writers["hyperparameter"], self.phases.hyperparameters(step), step)
            # Up to `steps_per_call` updates, never past a logging or checkpoint step.
            count = min(config.steps_per_call, last_step - step,
                        _next_multiple(step, config.log_every_steps) - step,
                        _next_multiple(step, config.checkpoint_every_steps) - step)
            train_step = self.phases.step_at(step)
            traces, started = train_step.traces(), (time.perf_counter(), step)
            train_step.run(iterator, count, step)
            step += count
            if timed_from is None:
                # Timed from this call unless it traced the step (once a session and phase).
                timed_from = (time.perf_counter(), step) if train_step.traces() != traces else started
            if bar is not None:
                bar.update(count)
            if step % config.log_every_steps == 0:
                self.phases.write_windows(writers["train"], step)
            # The caller checkpoints `last_step` itself, after its validation: a kill
            # between the two must not leave a checkpoint whose validation is missing.
            if step < last_step and self._checkpoint_due(step):
                self.save_checkpoint()
            stopping = stop.stopping() if stop else False
        self.guards.check_finite(self.last_good_checkpoint())
        if timed_from is None:
            return 0.0, 0, stopping
        return time.perf_counter() - timed_from[0], self.step - timed_from[1], stopping

    def _checkpoint_due(self, step):
        """Every `checkpoint_every_steps`, and once `checkpoint_every_seconds` have passed."""
        return step % self.config.checkpoint_every_steps == 0 or self.state.time_due()

    def validate(self, writers, whole):
        """A validation point (utils/training/evaluation.py): scalars, validators, the log line.

        The collapse guard runs first: a dead model is never scored, so it is never
        kept as a validator's best checkpoint (SND would score it at its best).
        """
        self.guards.check_collapse(self.step, self.last_good_checkpoint())
        validation, line = self.evaluator.validation_point(
            self.step, self.config.total_steps, whole, writers["validation"], self.validators)
        append_log_line(self.dirs["logs"], line)
        return validation
