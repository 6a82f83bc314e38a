"""Paging over the sorted indexes, against a plain sort."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stripesync.emulator.store import Index, Record, page


@given(
    created=st.lists(st.integers(0, 5), min_size=0, max_size=40),
    limit=st.integers(1, 7),
    cursor=st.integers(0, 39),
    backward=st.booleans(),
)
def test_page_matches_a_sort(created, limit, cursor, backward):
    recs = [
        Record("customer", f"cus_{i}", c, i + 1, {"id": f"cus_{i}"}) for i, c in enumerate(created)
    ]
    ix = Index()
    for r in recs:
        ix.add(r)
    order = sorted(recs, key=lambda r: (r.created, r.seq), reverse=True)
    assert [r.id for r in ix.records()] == [r.id for r in order]
    if not recs:
        assert page(ix, limit=limit) == ([], False)
        return
    c = order[cursor % len(order)]
    pos = order.index(c)
    if backward:
        got, more = page(ix, limit=limit, before=c)
        want = order[max(0, pos - limit) : pos]
        assert more == (pos - limit > 0)
    else:
        got, more = page(ix, limit=limit, after=c)
        want = order[pos + 1 : pos + 1 + limit]
        assert more == (pos + 1 + limit < len(order))
    assert [r.id for r in got] == [r.id for r in want]
