"""gatewright: one API key, many models, on your own machine."""

__version__ = "0.1.0"
