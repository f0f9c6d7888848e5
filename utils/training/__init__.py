"""The training loop and what plugs into it, one concern per module.

    loop.py                 the Trainer: wires the parts below; fit, validation points, rollbacks
    prepare.py              the run's data: held-out splits, training pools, the training stream
    phases.py               what is trained: the network and its copies, optimizers, train steps
    objective.py            the DANN objective: loss terms, their sum, the registry of recipe terms
    step.py                 one compiled train step for any phase, and its loop of updates
    evaluation.py           evaluate, apply_in_batches, validation points
    state.py                run clock, checkpoint contents, save/restore, forgetting later logs
    checkpoints.py          which checkpoints on disk are intact, which to resume from
    results.py              what a run ends with: final weights, results.json, TensorBoard extras
    guards.py               the NaN and collapse guards as the loop asks them, and what they do
    collapse_guard.py       the collapse guard itself and the rollback record
    stop_signals.py         SIGINT/SIGTERM: stop after the update, with the shell's exit status
    window_sums.py          running sums of the logging window, kept in the checkpoint
    schedules.py            the learning-rate and GRL lambda schedules (Sec. 5.2.2)
    precision.py            mixed precision: policies, loss scaling
    distribute.py           tf.distribute strategies and agreement between workers
    run_lock.py             the locks: one writer per run, one build per data folder
    outcome.py              how a run ends: exit statuses and their one-line messages
    init_from.py            starting a refinement run from another run's adaptation phase
    weight_average.py       recipe component: the weight average evaluated and saved
    target_entropy.py       recipe component: conditional entropy on target images
    virtual_adversarial.py  recipe component: VAT on target images
    refinement.py           recipe component: the refinement phase (DIRT-T) and its objective
"""
