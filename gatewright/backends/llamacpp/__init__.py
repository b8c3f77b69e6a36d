"""The embedded llama.cpp engine: the backend (``backend``), its continuous-batching scheduler
(``scheduler``), one choice's decoding (``engine``), prompt snapshots (``prefix_cache``), chat
templates, constrained decoding (``constrain``, ``toolcalls``) and output shaping (``shaping``).
The catalog names it ``llamacpp``."""

from gatewright.backends.openmp import spin_briefly

spin_briefly()  # before any module here loads llama.cpp, and libgomp with it
