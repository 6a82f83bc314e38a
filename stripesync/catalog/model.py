"""The catalog's vocabulary: what a collection is and where it is read from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ReadKind(StrEnum):
    """Where the rows of a collection come from."""

    LIST = "list"  # a top-level list endpoint: GET /v1/customers
    NESTED = "nested"  # a parent's list: GET /v1/customers/{customer}/tax_ids
    SINGLETON = "singleton"  # one object: GET /v1/balance
    REFERENCE = "reference"  # only reachable through other objects' fields
    LEGACY = "legacy"  # an endpoint that only older Stripe-Versions serve
    EVENTS = "events"  # only ever seen in event payloads
    UPCOMING = "upcoming"  # an invoice preview per customer / subscription
    WRITE_ONLY = "write_only"  # no read endpoint: rows come from the proxy's writes


@dataclass(frozen=True, slots=True)
class Reference:
    """A field of another collection whose value is (or expands to) this collection."""

    collection: str  # the referencing collection
    field: str  # dotted path inside its objects: "source", "payment_method_details.card.mandate"


@dataclass(frozen=True, slots=True)
class Read:
    kind: ReadKind
    # The list endpoint (LIST, NESTED, LEGACY); path parameters in braces. For NESTED the
    # parent's id fills `parent_param` (a path parameter, or a query parameter when the
    # path has none, as in GET /v1/subscription_items?subscription=...).
    path: str | None = None
    parent: str | None = None
    parent_param: str | None = None
    # Fixed query parameters of every list request ({"status": "all"}).
    params: Mapping[str, str] = field(default_factory=dict)
    # The list accepts created[gt|gte|lt|lte], so it can be split into time slices.
    created_filter: bool = False
    # GET one object; `{id}` is the object's id, other braces as in `path`.
    retrieve: str | None = None
    # LEGACY: a Stripe-Version that still serves the endpoint.
    api_version: str | None = None
    references: tuple[Reference, ...] = ()
    # EVENTS: the event types whose data.object is this collection.
    event_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One Stripe call the proxy may make for a write."""

    verb: str  # POST / DELETE
    path: str  # "/v1/customers/{customer}/tax_ids/{id}": braces name row columns or the id
    params: str | None  # the SDK's parameter TypedDict (None: hand-declared, legacy)
    method: str  # the SDK's method name ("create", "update", "cancel", "delete")


@dataclass(frozen=True, slots=True)
class Writes:
    create: WriteOp | None = None
    update: WriteOp | None = None
    delete: WriteOp | None = None

    @property
    def any(self) -> bool:
        return bool(self.create or self.update or self.delete)


@dataclass(frozen=True, slots=True)
class LegacyColumn:
    """A column of a collection the pinned SDK no longer describes."""

    name: str
    type: str  # "str", "int", "unix", "bool", "json", "ref", "float"


@dataclass(frozen=True, slots=True)
class Collection:
    """One synced collection: one table in the database."""

    name: str  # catalog name: "checkout.session"
    object: str  # the `object` value of its objects: "checkout.session"
    read: Read
    sdk_class: str | None  # class name in the SDK spec; None for legacy collections
    key: str = "id"
    events: tuple[str, ...] = ()  # event types that create, change or delete it
    delete_events: tuple[str, ...] = ()  # those that mean "gone"
    writes: Writes = Writes()
    seed: bool = False  # one of the 56 collections of the seed
    seed_writable: bool = False  # the seed marks it writable
    relist: bool = False  # events miss changes: re-listed on a schedule
    # objects whose `object` differs but that land here (customer sources: "card")
    also_objects: tuple[str, ...] = ()
    legacy_columns: tuple[LegacyColumn, ...] = ()
    # Further places the same collection is read from (an account's external bank
    # accounts besides customers' bank accounts; GET /v1/account besides /v1/accounts).
    extra_reads: tuple[Read, ...] = ()
    # Children whose rows go when this collection's row is deleted.
    children: tuple[str, ...] = ()
    # Top-level fields that hold a credential: the store keeps them as JSON null in
    # `_raw` (so their columns are NULL), never their value.
    masked: tuple[str, ...] = ()
    notes: str = ""

    @property
    def table(self) -> str:
        return self.name.replace(".", "_")

    @property
    def objects(self) -> tuple[str, ...]:
        return (self.object, *self.also_objects)

    @property
    def reads(self) -> tuple[Read, ...]:
        return (self.read, *self.extra_reads)

    @property
    def writable(self) -> bool:
        return self.writes.any


class UnknownCollectionError(ValueError):
    pass


class Catalog:
    """Every collection stripesync knows, by name."""

    def __init__(self, collections: list[Collection]) -> None:
        self._by_name: dict[str, Collection] = {}
        for c in collections:
            if c.name in self._by_name:
                raise ValueError(f"collection {c.name!r} declared twice")
            self._by_name[c.name] = c
        tables = [c.table for c in collections]
        if len(set(tables)) != len(tables):
            raise ValueError("two collections map to one table")

    def __iter__(self) -> Iterator[Collection]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Collection:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownCollectionError(f"unknown collection {name!r}") from None

    def names(self) -> list[str]:
        return list(self._by_name)

    def seed(self) -> list[Collection]:
        return [c for c in self if c.seed]

    def by_table(self, table: str) -> Collection | None:
        for c in self:
            if c.table == table:
                return c
        return None

    def for_object(self, obj: str, *, parent: str | None = None) -> Collection | None:
        """The collection an object with this `object` value belongs to."""
        found = [c for c in self if obj in c.objects]
        if parent is not None:
            nested = [c for c in found if c.read.parent == parent]
            if nested:
                return nested[0]
        return found[0] if found else None

    def select(self, names: list[str] | None) -> list[Collection]:
        """The collections a `--collections a,b` option names (all when None)."""
        if not names:
            return list(self)
        unknown = [n for n in names if n not in self._by_name]
        if unknown:
            raise UnknownCollectionError(
                f"unknown collection(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self._by_name))}"
            )
        return [self._by_name[n] for n in names]

    def children_of(self, name: str) -> list[Collection]:
        return [c for c in self if c.read.parent == name]
