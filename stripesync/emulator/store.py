"""The emulator's object store.

Every object is a `Record`: its dict and, once rendered, its compact JSON bytes (list
pages are assembled from those bytes). Records live in one map per object type and
in sorted indexes: one per type (top-level lists) and one per concrete nested list path
(`/v1/customers/cus_1/tax_ids`). Index keys are `(created, seq)`: lists are newest
first with a stable tiebreak (the later-created first); objects without `created`
(invoice lines, checkout line items) keep their insertion order, oldest first.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: Any) -> bytes:
    return _dumps(obj).encode()


class Record:
    __slots__ = ("_obj", "_raw", "created", "id", "lists", "seq", "type")

    def __init__(
        self,
        type_: str,
        id_: str,
        created: int,
        seq: int,
        obj: dict[str, Any] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.type = type_
        self.id = id_
        self.created = created
        self.seq = seq
        self._obj = obj
        self._raw = raw
        self.lists: list[str] = []

    @property
    def obj(self) -> dict[str, Any]:
        """The object itself (mutate it, then call `touch()`)."""
        if self._obj is None:
            assert self._raw is not None
            self._obj = json.loads(self._raw)
        return self._obj

    def to_bytes(self) -> bytes:
        raw = self._raw
        if raw is None:
            raw = self._raw = dumps(self._obj)
        return raw

    def touch(self) -> None:
        """The dict changed: drop the rendered bytes."""
        if self._obj is not None:
            self._raw = None

    def replace_bytes(self, raw: bytes) -> None:
        """The object is now `raw` (the dict is parsed again when asked for)."""
        self._raw = raw
        self._obj = None

    def copy(self) -> dict[str, Any]:
        """A deep copy of the object (for events, expansion, diffs)."""
        return json.loads(self.to_bytes())  # type: ignore[no-any-return]

    def key(self) -> tuple[int, int]:
        return (self.created, self.seq)


class Index:
    """Records sorted by (created, seq), ascending; lists read it backwards."""

    __slots__ = ("_dirty", "_keys", "newest_first")

    def __init__(self, newest_first: bool = True) -> None:
        self._keys: list[tuple[int, int, Record]] = []
        self._dirty = False
        self.newest_first = newest_first

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, rec: Record) -> None:
        entry = (rec.created, rec.seq, rec)
        keys = self._keys
        if keys and not self._dirty and (keys[-1][0], keys[-1][1]) > (rec.created, rec.seq):
            self._dirty = True
        keys.append(entry)

    def remove(self, rec: Record) -> None:
        keys = self.keys()
        i = bisect_left(keys, (rec.created, rec.seq))
        if i < len(keys) and keys[i][2] is rec:
            del keys[i]

    def keys(self) -> list[tuple[int, int, Record]]:
        if self._dirty:
            self._keys.sort(key=lambda e: (e[0], e[1]))
            self._dirty = False
        return self._keys

    def position(self, rec: Record) -> int:
        return bisect_left(self.keys(), (rec.created, rec.seq))

    def records(self) -> Iterator[Record]:
        """In list order (newest first, or insertion order)."""
        keys = self.keys()
        it = reversed(keys) if self.newest_first else iter(keys)
        for e in it:
            yield e[2]


Predicate = Callable[[Record], bool]


def page(
    index: Index,
    *,
    limit: int,
    after: Record | None = None,
    before: Record | None = None,
    created: tuple[int | None, int | None] = (None, None),
    predicate: Predicate | None = None,
) -> tuple[list[Record], bool]:
    """One page in list order: `after` = starting_after, `before` = ending_before.
    `created` is an inclusive (low, high) range. Returns (records, has_more)."""
    keys = index.keys()
    lo, hi = 0, len(keys)
    clo, chi = created
    if clo is not None:
        lo = bisect_left(keys, (clo,))
    if chi is not None:
        hi = bisect_left(keys, (chi + 1,))
    newest_first = index.newest_first
    # "forward" = the list's own direction
    if after is not None:
        p = bisect_left(keys, (after.created, after.seq))
        if newest_first:
            hi = min(hi, p)
        else:
            lo = max(lo, p + 1)
    backward = False
    if before is not None:
        p = bisect_left(keys, (before.created, before.seq))
        if newest_first:
            lo = max(lo, p + 1)
        else:
            hi = min(hi, p)
        backward = True
    # walk direction over `keys`: newest-first lists walk downwards, unless paging back
    down = newest_first != backward
    out: list[Record] = []
    rng = range(hi - 1, lo - 1, -1) if down else range(lo, hi)
    has_more = False
    for i in rng:
        rec = keys[i][2]
        if predicate is not None and not predicate(rec):
            continue
        if len(out) == limit:
            has_more = True
            break
        out.append(rec)
    if backward:
        out.reverse()
    return out, has_more


class Store:
    def __init__(self) -> None:
        self.by_type: dict[str, dict[str, Record]] = {}
        self.type_index: dict[str, Index] = {}
        self.path_index: dict[str, Index] = {}
        self.deleted: dict[str, dict[str, Record]] = {}
        self.singletons: dict[str, Record] = {}
        self.seq = 0
        self.ordered_types: set[str] = set()  # types without `created`: insertion order

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def objects(self, obj_type: str) -> dict[str, Record]:
        d = self.by_type.get(obj_type)
        if d is None:
            d = self.by_type[obj_type] = {}
        return d

    def index(self, obj_type: str) -> Index:
        ix = self.type_index.get(obj_type)
        if ix is None:
            ix = self.type_index[obj_type] = Index(obj_type not in self.ordered_types)
        return ix

    def list_index(self, path: str, obj_type: str | None = None) -> Index:
        ix = self.path_index.get(path)
        if ix is None:
            newest_first = obj_type is None or obj_type not in self.ordered_types
            ix = self.path_index[path] = Index(newest_first)
        return ix

    def get(self, obj_type: str, obj_id: str) -> Record | None:
        d = self.by_type.get(obj_type)
        return d.get(obj_id) if d else None

    def get_deleted(self, obj_type: str, obj_id: str) -> Record | None:
        d = self.deleted.get(obj_type)
        return d.get(obj_id) if d else None

    def add(self, rec: Record) -> Record:
        objs = self.objects(rec.type)
        old = objs.get(rec.id)
        if old is not None:
            self.remove(old, tombstone=False)
        objs[rec.id] = rec
        self.index(rec.type).add(rec)
        tomb = self.deleted.get(rec.type)
        if tomb:
            tomb.pop(rec.id, None)
        return rec

    def add_to_list(self, path: str, rec: Record) -> None:
        if path in rec.lists:
            return
        self.list_index(path, rec.type).add(rec)
        rec.lists.append(path)

    def remove_from_list(self, path: str, rec: Record) -> None:
        if path not in rec.lists:
            return
        ix = self.path_index.get(path)
        if ix is not None:
            ix.remove(rec)
        rec.lists.remove(path)

    def remove(self, rec: Record, *, tombstone: bool = True) -> None:
        objs = self.by_type.get(rec.type)
        if objs is not None and objs.get(rec.id) is rec:
            del objs[rec.id]
            self.index(rec.type).remove(rec)
        for path in list(rec.lists):
            self.remove_from_list(path, rec)
        if tombstone:
            self.deleted.setdefault(rec.type, {})[rec.id] = rec

    def find_any(self, obj_id: str, types: list[str] | None = None) -> Record | None:
        for t in types if types is not None else list(self.by_type):
            rec = self.get(t, obj_id)
            if rec is not None:
                return rec
        return None

    def counts(self) -> dict[str, int]:
        return {t: len(d) for t, d in sorted(self.by_type.items()) if d}
