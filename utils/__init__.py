"""Data, schedules, training loop, logging and command-line tools for DANN."""
