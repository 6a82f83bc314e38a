"""The one writer: every Stripe object reaches the database through `Store`."""

from stripesync.store.store import Incoming, Store, WriteResult

__all__ = ["Incoming", "Store", "WriteResult"]
