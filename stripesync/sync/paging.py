"""What the backfill and the re-list share to page Stripe's lists: the page size, the
request that turns Stripe's refusals into skips, and the parameters a list accepts."""

from __future__ import annotations

from functools import cache
from typing import Any

from stripesync.catalog import Collection, Read, load_spec
from stripesync.stripe_api.client import StripeApi, StripeApiError

PAGE = 100


class Skip(Exception):
    """A collection Stripe will not serve us: recorded and skipped."""


class ParentGone(Exception):
    pass


def refusal(e: StripeApiError) -> str | None:
    """The reason to skip a collection, or None when the error is not a refusal."""
    if e.status in (401,):
        return None  # a bad key: fatal for the whole run
    if e.status == 403:
        return f"permission denied: {e.message}"
    if e.status == 404:
        return f"endpoint not available: {e.message}"
    if e.status == 400:
        return f"refused by Stripe: {e.message}"
    return None


async def get_page(
    api: StripeApi, read: Read, path: str, params: dict[str, Any], *, child: bool = False
) -> dict[str, Any]:
    """One list or retrieve request; a refusal raises Skip. For a child list or a
    referenced object (`child`), a 404 `resource_missing` raises ParentGone: the parent
    or the object is gone, the collection is not unavailable."""
    try:
        return await api.get(path, supported(read, params), stripe_version=read.api_version)
    except StripeApiError as e:
        if child and e.not_found and e.code == "resource_missing":
            raise ParentGone from None
        reason = refusal(e)
        if reason is None:
            raise
        raise Skip(reason) from None


def supported(read: Read, params: dict[str, Any]) -> dict[str, Any]:
    """Leave out paging parameters a list does not take (report types, capabilities)."""
    if read.path is None or read.api_version:
        return params
    accepted = list_params(read.path)
    if accepted is None:
        return params
    return {k: v for k, v in params.items() if k.split("[")[0] in accepted or k in read.params}


@cache
def list_params(path: str) -> frozenset[str] | None:
    op = load_spec().operation("GET", path)
    if op is None or op.params is None:
        return None
    return frozenset(load_spec().param_fields(op.params))


def accepts(c: Collection, obj: dict[str, Any]) -> bool:
    return obj.get("object") in c.objects
