"""Benchmarks of the explorer: `python -m benchmarks` measures every figure of issue 11's table.

Each figure is a dict `{"figure", "name", "value", "unit", "target", "met", "note"}` (see
`benchmarks.common.figure`); `benchmarks.table` prints them and writes BENCHMARKS.md.
"""
