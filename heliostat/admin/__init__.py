"""Admin HTTP: health, readiness, Prometheus metrics and the debug state of every view."""
