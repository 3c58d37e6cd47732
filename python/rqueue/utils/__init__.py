"""Helpers for task code, where Celery keeps them (``rqueue.utils.log.get_task_logger``)."""
