"""`make bench`: the fast-day benchmarks, each a ratio against a floor measured in the same run."""
