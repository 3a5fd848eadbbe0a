"""The long-running worker process: its threads, start-up, waiting for work, leases, backfills,
model changes, signals and shutdown."""
