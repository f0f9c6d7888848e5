"""Stopping a run by signal: SIGINT or SIGTERM ends it after the current update.

The trainer then writes a checkpoint of that exact step and raises Interrupted,
whose `exit_status` is what a shell reports for the signal, so a resume
continues without a gap or a repeated step. In a multi-worker run a signal
reaches one process: the wish to stop is agreed by every worker
(utils/training/distribute.py, Agreement), and a worker stopped by another's
signal stops as by SIGTERM.
"""
import signal

# Exit status of a run stopped by a signal, as a shell reports it (128 + signal number).
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint of the current step has been written."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.exit_status = SIGNAL_EXIT[signum]


class StopSignals:
    """While entered, SIGINT and SIGTERM are recorded instead of ending the process;
    `stopping()` says whether any worker received one. `agree` is an Agreement."""

    def __init__(self, agree):
        self.agree, self.received, self.handlers = agree, [], {}

    def __enter__(self):
        self.handlers = {signum: signal.signal(signum, lambda signum, _: self.received.append(signum))
                         for signum in SIGNAL_EXIT}
        return self

    def __exit__(self, *exception):
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        return False

    def stopping(self):
        """Whether to stop: a signal reached this or any other worker (agreed by all)."""
        (stopping,) = self.agree(bool(self.received))
        if stopping and not self.received:
            self.received.append(signal.SIGTERM)
        return stopping

    def interrupted(self):
        """The Interrupted to raise for the first signal received."""
        return Interrupted(self.received[0])
