"""Database URLs are checked before connecting, with what is wrong and the forms expected."""

from __future__ import annotations

import pytest

from stripesync.db.url import check_database_url, without_password


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@localhost:5432/db",
        "postgres://localhost/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://h1:5432,h2:5433/db?target_session_attrs=read-write",
        "host=localhost port=5432 dbname=db user=u",
        "dbname=db",
    ],
)
def test_the_forms_libpq_accepts_pass(url: str) -> None:
    check_database_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "the database URL is empty"),
        ("not a url", "neither a URL nor key=value pairs"),
        ("not=a url", "cannot be read"),
        ("mysql://u:hunter2@h/db", "not a PostgreSQL URL (scheme 'mysql')"),
        ("postgresql://u:hunter2@h:abc/db", "has port 'abc'"),
        ("postgresql://u:hunter2@h:70000/db", "has port '70000'"),
        ("host=h password=hunter2 port=x", "has port 'x'"),
        ("postgresql://u:hunter2@h/db?nonsense=1", "cannot be read"),
    ],
)
def test_what_is_wrong_is_said_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"expected|a port is a number") as caught:
        check_database_url(url)
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_without_password() -> None:
    assert without_password("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert without_password("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert without_password("postgresql://u@h/db") == "postgresql://u@h/db"
