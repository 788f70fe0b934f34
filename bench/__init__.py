"""nubi's benchmarks: run with `python -m bench` (see bench/README.md). Not part of the test suite.

Every figure is printed beside a baseline measured in the same run on the same database kind,
because these machines are noisy: the ratio travels, the absolute number does not.
"""
