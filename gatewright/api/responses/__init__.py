"""The OpenAI Responses API dialect (``/v1/responses``)."""
