"""The task API: ``POST /v1`` and ``/v1/tasks`` with ``taskType: textInference``."""
