"""Adapters: stenod's edges to the outside world (SQLite, systemd, HTTP, …)."""
