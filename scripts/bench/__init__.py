"""The benchmarks (`python -m scripts.bench --help`): one module per benchmark, `__main__` dispatches."""
