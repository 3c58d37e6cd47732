"""A Celery 5 project whose worker consumes what rqueue producers send (see test_celery_interop)."""
