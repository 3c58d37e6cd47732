"""Celery's "Next Steps" layout (proj/celery.py), with the import line changed to rqueue's."""

import os

from rqueue import Celery

app = Celery("proj", include=["proj.tasks"])
app.config_from_object("proj.celeryconfig")
app.conf.broker_url = os.environ["TEST_BROKER_URL"]
app.conf.result_backend = os.environ.get("TEST_BACKEND_URL") or os.environ["TEST_BROKER_URL"]
app.autodiscover_tasks(["proj.reports"])

if __name__ == "__main__":
    app.start()
