"""The catalog: one declarative entry per Stripe collection, derived from the SDK."""

from stripesync.catalog.entries import build_catalog, embedded_field
from stripesync.catalog.model import (
    Catalog,
    Collection,
    LegacyColumn,
    Read,
    ReadKind,
    Reference,
    UnknownCollectionError,
    WriteOp,
    Writes,
)
from stripesync.catalog.spec import Operation, Spec, load_spec

__all__ = [
    "Catalog",
    "Collection",
    "LegacyColumn",
    "Operation",
    "Read",
    "ReadKind",
    "Reference",
    "Spec",
    "UnknownCollectionError",
    "WriteOp",
    "Writes",
    "build_catalog",
    "embedded_field",
    "load_spec",
]
