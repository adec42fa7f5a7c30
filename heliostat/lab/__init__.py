"""Real processes on loopback for tests, benchmarks and the demo (never used by `serve`)."""
