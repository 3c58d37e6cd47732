"""An unmodified Celery project (Celery's Next Steps layout): nothing here knows rqueue."""

import os

from celery import Celery

app = Celery(
    "proj",
    broker=os.environ["TEST_BROKER_URL"],
    backend=os.environ["TEST_BROKER_URL"],
    include=["proj.tasks"],
)
app.conf.update(result_expires=3600, worker_max_tasks_per_child=50)
