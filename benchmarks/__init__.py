"""eventfold against the raw drivers: throughput and latency, same database work side by side.

Run ``python -m benchmarks`` (or ``make bench``); ``--help`` lists the options.
"""
