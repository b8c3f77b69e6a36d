"""Engines and providers. Each module turns a ``core.CoreRequest`` into the neutral event stream;
``registry.BACKENDS`` maps a catalog deployment's ``backend`` name to the class that serves it.
Backends import ``core`` only.
"""
