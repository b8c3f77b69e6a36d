"""OpenAI Chat Completions: ``POST /v1/chat/completions`` and ``GET /v1/models``."""
