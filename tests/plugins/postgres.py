"""pytest plugin: a real PostgreSQL for the suite (filled in by the db layer)."""
