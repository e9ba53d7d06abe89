"""Placeholder replaced by the sphinx provider implementation."""
