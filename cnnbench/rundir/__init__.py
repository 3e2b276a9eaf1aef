"""The run folder and its lifecycle: its files, how runs and sweeps are found, named, checkpointed,
logged, locked, checked before anything is written, identified and reused."""
