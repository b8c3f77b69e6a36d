"""The embedded embedding model: a sentence-transformers BERT run on llama.cpp (see ``backend``)."""
