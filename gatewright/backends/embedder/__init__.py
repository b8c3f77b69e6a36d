"""The embedded embedding model: a sentence-transformers BERT run on llama.cpp (see ``backend``)."""

from gatewright.backends.openmp import spin_briefly

spin_briefly()  # before any module here loads llama.cpp, and libgomp with it
