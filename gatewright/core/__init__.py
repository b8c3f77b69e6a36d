"""The dialect-neutral heart of gatewright.

Requests, responses and stream events in one shape that is nobody's wire format; the catalog,
routing, billing, keys and limits that act on them. This package imports nothing from ``api``
(the wire dialects) or ``backends`` (the engines); an import-linter contract keeps it that way.
"""
