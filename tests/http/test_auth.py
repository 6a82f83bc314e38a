"""--http-token: the status page and /metrics ask for it, /health and webhooks stay open."""

import base64

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from stripesync.http.server import WEBHOOK_PATH, HttpServer, create_app, is_loopback

TOKEN = "tok_status_page_SECRET_0123"


async def _page(request):
    return PlainTextResponse("the status page")


async def _healthy():
    return True, {"database": "ok"}


@pytest.fixture
async def url():
    app = create_app(health=_healthy, routes=[Route("/", _page)], auth_token=TOKEN)
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_pages_ask_for_the_token(url) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for path in ("/", "/metrics", "/status.json", "/nowhere"):
            for header in (None, "Bearer wrong", basic("admin", "wrong"), "Basic !!notbase64",
                           f"Token {TOKEN}", basic(TOKEN, "")):
                headers = {"Authorization": header} if header else {}
                r = await http.get(path, headers=headers)
                assert r.status_code == 401, (path, header)
                assert r.headers["www-authenticate"].startswith('Basic realm="stripesync"')
                assert TOKEN not in r.text
        # a browser's Basic prompt (any user name) or Prometheus' bearer token
        for header in (f"Bearer {TOKEN}", basic("anyone", TOKEN), basic("", TOKEN)):
            r = await http.get("/", headers={"Authorization": header})
            assert r.status_code == 200 and r.text == "the status page"
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "stripesync_" in r.text


async def test_health_and_webhooks_stay_open(url) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        r = await http.get("/health")
        assert r.status_code == 200 and r.json() == {"database": "ok", "ok": True}
        # no webhook secret here: 404 (not 401), Stripe signs what it sends
        r = await http.post(WEBHOOK_PATH, content=b"{}")
        assert r.status_code == 404


def test_which_addresses_are_this_machines_only() -> None:
    assert all(is_loopback(h) for h in (None, "localhost", "127.0.0.1", "127.8.0.1", "::1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "stripesync.example"))
