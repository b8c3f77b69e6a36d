"""Persistence: SQLAlchemy 2 (async) tables, Alembic migrations, and the queries the platform
runs. SQLite is the embedded default; PostgreSQL is the multi-replica store. Nothing here knows
about wire dialects or backends.
"""
