"""Control plane: what runs around the ML core. The command line (`python -m engine ...`), the launcher
and queue, the Slurm backend, heartbeats, checks against the database before a launch (preflight),
the dataset registry and the presets. Sits above `db/` and the ML core (`engine/`), below the dashboard."""
