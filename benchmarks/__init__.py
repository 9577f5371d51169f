"""The wactorz benchmark suite: each workload on wactorz and on raw Trio, in the same run.

Run it with ``nox -s bench`` (``-- --quick`` for a short run) or
``python -m benchmarks``; see ``benchmarks/README.md`` for the workloads.
"""

import logging

# The runtime's crash reports are its output, not its cost: with no logging configured,
# Python's last-resort handler would format and print the traceback of every crash the
# restart and no-loss workloads cause. A NullHandler takes them without formatting, as
# the benchmarks have always measured.
logging.getLogger("wactorz").addHandler(logging.NullHandler())
