"""Where the run's updates are computed: one device, several on one machine, or several machines.

Three `--strategy` values, each an existing tf.distribute engine:

- `default`: one device (TensorFlow's default strategy).
- `mirrored`: synchronous data parallelism over the devices of one machine
  (`tf.distribute.MirroredStrategy`): every GPU, else the CPU.
- `multi_worker`: the same over several processes, usually on several machines
  (`tf.distribute.MultiWorkerMirroredStrategy`), configured by the standard
  `TF_CONFIG` environment variable. The global batch is split evenly across the
  workers, as `mirrored` splits it across devices, so a run's updates are those of
  one process with the same global batch, up to rounding (a sum of per-replica
  gradients), which training amplifies as it does `mirrored`'s (README).

In a multi-worker run only the chief (task `chief`, or `worker` 0 when the cluster
has none) writes the run: its event files, log.txt, results, config, checkpoints
and final weights, and it holds the run lock. The other workers compute the same
updates and write what they must write to a temporary folder outside the run,
removed when they exit: TensorFlow's multi-worker checkpoint pattern (every worker
saves, since the save reads variables summed across workers, but only the chief's
copy is kept). A resumed worker reads the chief's checkpoints.

Everything that decides the control flow must be the same in every worker, or one
of them would wait forever in a collective the others never start: the NaN flag is
summed across replicas in the step; the wish to stop (SIGINT/SIGTERM reaches one
process), a checkpoint due by wall time (after each call of the compiled loop and
at each validation point) and the collapse guard's verdict are agreed by `agree()`.
The rest follows from the weights and the step, which all workers share. A worker
that fails before the workers first meet (bad data on one host, say) meets them
before it exits (`meet_and_leave`), so the others see a peer failure rather than
wait for it for ever.
"""
import contextlib
import json
import os

from utils.io import UserError


class Task:
    """This process's part of a multi-worker cluster, read from TF_CONFIG (no TensorFlow import)."""

    def __init__(self, task_type, task_id, num_workers, has_chief):
        self.type, self.id, self.num_workers = task_type, task_id, num_workers
        # TensorFlow's rule: the chief task, or worker 0 of a cluster without one.
        self.is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                                 and not has_chief)

    @property
    def name(self):
        return f"{self.type} {self.id}"


def cluster_task(environ=None):
    """The Task that TF_CONFIG gives this process; UserError naming what is wrong with it.

    TF_CONFIG is TensorFlow's JSON: {"cluster": {"worker": ["host:port", ...]},
    "task": {"type": "worker", "index": 0}}; a "chief" list is allowed beside "worker".
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    fix = ("set TF_CONFIG to e.g. '{\"cluster\": {\"worker\": [\"host1:12345\", "
           "\"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' (README, "
           "\"More than one device\")")
    if not text.strip():
        raise UserError(f"--strategy multi_worker reads the cluster from TF_CONFIG, which is not set; {fix}")
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        task_type, task_id = task["type"], int(task["index"])
        members = {kind: list(cluster.get(kind, [])) for kind in ("chief", "worker")}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"TF_CONFIG is not a cluster and task ({type(error).__name__}: "
                        f"{error}); {fix}") from None
    if task_type not in members or not 0 <= task_id < len(members[task_type]):
        raise UserError(f"TF_CONFIG's task {task_type} {task_id} is not in its cluster "
                        f"({', '.join(f'{len(v)} {k}' for k, v in members.items())}); {fix}")
    if len(members["chief"]) > 1:
        raise UserError(f"TF_CONFIG lists {len(members['chief'])} chiefs; a cluster has at most one")
    return Task(task_type, task_id, len(members["chief"]) + len(members["worker"]),
                has_chief=bool(members["chief"]))


def run_task(config, run_name_given, init_from=None):
    """This process's Task in a `--strategy multi_worker` run (None for other strategies),
    refusing what a cluster cannot do: every worker must name the same run (a timestamp
    would differ), and `--init-from` is trained on one process."""
    if config.strategy != "multi_worker":
        return None
    task = cluster_task()
    if not run_name_given:
        raise UserError("--strategy multi_worker needs --run-name: every worker must name the "
                        "same run")
    if init_from:
        raise UserError("--init-from is not supported with --strategy multi_worker; train the "
                        "refinement phase on one process")
    return task


def is_peer_failure(error, config):
    """Whether a TensorFlow error is what the collectives raise when another worker died or
    cannot be reached."""
    import tensorflow as tf

    return config.strategy == "multi_worker" and isinstance(
        error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError))


def create_strategy(name):
    """The tf.distribute strategy named `name`. MultiWorkerMirroredStrategy must be created
    before the program's first TensorFlow op (it configures the collective ops)."""
    import tensorflow as tf

    if name == "multi_worker":
        cluster_task()  # a clear error rather than TensorFlow's on a bad TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def meet_and_leave(timeout_seconds=60.0):
    """For a worker that fails before the workers have met (bad data on its host, say).

    The others wait in MultiWorkerMirroredStrategy() until every worker has joined, with
    no limit. Joining (for at most `timeout_seconds`) before exiting turns this worker's
    failure into one the cluster sees: its heartbeats stop, and the others' collectives
    fail with a peer failure (`is_peer_failure`; utils/training/outcome.py names it in one
    line).
    """
    import threading

    joining = threading.Thread(target=create_strategy, args=("multi_worker",), daemon=True)
    joining.start()
    joining.join(timeout_seconds)


@contextlib.contextmanager
def leaving_on_bad_input(task):
    """Around what a worker checks before the workers meet: on a UserError, a worker of a
    cluster (`task` not None) meets the others and goes (`meet_and_leave`), so that they
    learn it has gone instead of waiting for it for ever."""
    try:
        yield
    except UserError:
        if task:
            meet_and_leave()
        raise


def is_multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class Agreement:
    """`agree(*flags)`: each flag made true in every worker if it is true in any one.

    One all-reduce of a few numbers, only in a multi-worker run; elsewhere the flags
    come back as they are, at no cost.
    """

    def __init__(self, strategy):
        self.strategy = strategy
        self._sum = None
        if is_multi_worker(strategy):
            import tensorflow as tf

            def summed(values):
                per_replica = strategy.run(tf.identity, args=(values,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._sum = tf.function(summed)

    def __call__(self, *flags):
        if self._sum is None:
            return tuple(bool(flag) for flag in flags)
        import tensorflow as tf

        totals = self._sum(tf.constant([float(bool(flag)) for flag in flags]))
        return tuple(bool(total > 0) for total in totals.numpy())
