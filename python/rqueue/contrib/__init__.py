"""Optional integrations: the pytest plugin (``rqueue.contrib.pytest``) and pydantic arguments."""
