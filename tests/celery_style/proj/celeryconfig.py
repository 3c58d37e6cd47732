"""A Celery configuration module as projects have them: some settings rqueue uses, some it does not."""

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True
result_expires = 3600
worker_max_tasks_per_child = 100
worker_lost_wait = 10.0  # Celery's; rqueue warns that it has no effect
worker_send_task_events = False
task_acks_late = True
