"""The platform's own API: keys (``/v1/keys``, ``/v1/key``) and billing (``/v1/billing/*``, ``/v2/billing*``)."""
