"""How the job runs as a process: wiring from settings, one-off runs, the scheduler daemon,
its HTTP endpoints, the health check and single-user regeneration."""
