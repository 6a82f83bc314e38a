"""stripesync: a live, queryable copy of a Stripe account in PostgreSQL."""

__version__ = "0.1.0"
