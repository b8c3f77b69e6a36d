"""Benchmarks (``make bench``): gateway overhead against LiteLLM, engine against raw llama.cpp."""
