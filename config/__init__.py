"""Typed experiment configuration."""
from config.config import DANNConfig

__all__ = ["DANNConfig"]
