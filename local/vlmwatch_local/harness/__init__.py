"""The experiments: bench, chaos, perf and coldstart, on the one local stack and the one clock."""
