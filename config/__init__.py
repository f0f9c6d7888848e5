"""The run's typed configuration.

    config/config.py   DANNConfig: every setting of a run, its defaults, save and load
    config/checks.py   the allowed values and the rules DANNConfig.validate applies
    config/recipes.py  named recipes: how each differs from the defaults
    config/cli.py      one flag per field, and the config a command line asks for

Runs save their configs beside the code, in config/<run>/ (the original's layout).
"""
from config.config import DANNConfig

__all__ = ["DANNConfig"]
