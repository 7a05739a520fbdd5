"""fairbench: train, evaluate and compare bias-mitigation methods for facial attribute classification."""

__version__ = "0.1.0"
