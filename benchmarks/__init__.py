"""The wactorz benchmark suite: each workload on wactorz and on raw Trio, in the same run.

Run it with ``nox -s bench`` (``-- --quick`` for a short run) or
``python -m benchmarks``; see ``benchmarks/README.md`` for the workloads.
"""
