"""The ``timing`` protocol: what each model costs and how the cost grows.

Files: measure.py (clocks, ``time_call`` / ``time_interleaved`` with medians and spread, peak
tensor memory, log-log slope fits), protocol.py (``TimingSettings`` and ``run(cell)``: forward +
backward against T and width, step latency, MAML meta-update vmap against loop, collection
throughput). Imports: meta, models, suites.data.
"""
