"""Found by app.autodiscover_tasks(["proj.reports"]): a reusable module that imports no app."""

from rqueue import shared_task


@shared_task
def summary(values):
    return {"count": len(values), "total": sum(values)}
