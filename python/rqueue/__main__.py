"""``python -m rqueue`` is the ``rqueue`` command."""

from rqueue.cli import main

main()
