"""The journal on SQLite (the embedded default): jobs, items, provider jobs, checkpoints,
seen files, the event history and the outbox, written by one thread."""
