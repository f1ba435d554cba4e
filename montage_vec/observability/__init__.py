"""Edges that report on the job: logs (and, with the operations issue, events and metrics)."""
