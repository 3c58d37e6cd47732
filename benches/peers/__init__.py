"""The peer comparison: rqueue, Celery, Dramatiq, RQ, Huey (and taskito) on one private Redis.

``make bench-peers`` runs ``benches/peers/run.py`` in its own virtualenv (``.venv-bench``).
"""
