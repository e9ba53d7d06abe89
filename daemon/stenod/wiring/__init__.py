"""The composition root (building and running the daemon), provider discovery and setup, metrics."""
