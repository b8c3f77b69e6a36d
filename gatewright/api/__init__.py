"""Wire dialects. One package per dialect: schemas, pure translation to and from ``core``, SSE
rendering, an error table and thin routes. Dialects talk to ``core`` only, never to a backend.
"""
