"""Edges that report on the job: log sinks, Prometheus metrics, and the signals that stop a run."""
