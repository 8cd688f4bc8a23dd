"""Benchmarks of thunderhelm, each a side-by-side comparison measured in one run.

`thunderhelm bench NAME` (or ``python -m bench NAME``) runs one of them and
writes ``bench/results/NAME.json``; ``bench/RESULTS.md`` is rebuilt from every
JSON file present, so benchmarks added later report next to these ones.
"""
