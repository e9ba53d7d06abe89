"""Inputs fetched from URLs (size-capped, no private addresses unless allowed)."""
