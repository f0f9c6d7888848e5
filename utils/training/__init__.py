"""The training loop and what plugs into it.

    loop.py                 the DANN loop: one compiled train step, evaluation, checkpoints
    schedules.py            the learning-rate and GRL lambda schedules (Sec. 5.2.2)
    checkpoints.py          which checkpoints are intact, which to resume from
    run_lock.py             one writer per run
    collapse_guard.py       the collapse guard and --on-collapse rollback (the NaN guard is
                            in the train step)
    weight_average.py       recipe component: the weight average evaluated and saved
    target_entropy.py       recipe component: conditional entropy on target images
    virtual_adversarial.py  recipe component: VAT on target images
"""
