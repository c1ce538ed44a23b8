"""Benchmark suite for bupple_flask: fake upstream, load client, sampler, runner.

Run everything with ``python -m bench.run`` (``--quick`` or ``QUICK=1`` for a short run).
"""
