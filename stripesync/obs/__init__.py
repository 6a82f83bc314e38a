"""Observability every layer reports into: metrics and logs. Imports no other layer."""
