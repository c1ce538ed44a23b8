"""Another site's page cannot start a stream with the visitor's cookies; CORS only for listed origins."""

from __future__ import annotations

import requests

from bupple_flask.testing import Script

SHOP = "https://shop.example"
EVIL = "https://evil.example"


def _get(server, **headers: str) -> requests.Response:
    return requests.get(server.url + "/api/stream", params={"message": "hi", "provider": "openai"},
                        headers=headers, timeout=10)


def test_a_cross_site_get_is_refused_before_the_upstream(start_server, fake_openai) -> None:
    server = start_server()
    fake_openai.script = Script(chunks=["ok"])
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": EVIL}, {"Referer": EVIL + "/page.html"}):
        response = _get(server, **headers)
        assert response.status_code == 403, headers
        assert response.json()["error"]["code"] == "cross_site"
    assert fake_openai.requests == []
    own = _get(server, **{"Sec-Fetch-Site": "same-origin", "Referer": server.url + "/chat"})
    assert own.status_code == 200 and '"completion"' in own.text
    assert len(fake_openai.requests) == 1


def test_get_can_be_switched_off(start_server, fake_openai) -> None:
    server = start_server(BUPPLE_ALLOW_GET_STREAM="false")
    response = _get(server, **{"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert fake_openai.requests == []


def _preflight(server, origin: str) -> requests.Response:
    return requests.options(server.url + "/api/stream", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})


def test_cors_preflight_for_an_allowed_and_a_refused_origin(start_server, fake_openai) -> None:
    server = start_server(BUPPLE_CORS_ORIGINS=f"{SHOP}, https://other.example")
    fake_openai.script = Script(chunks=["ok"])
    allowed = _preflight(server, SHOP)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == SHOP
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "content-type" in allowed.headers["Access-Control-Allow-Headers"].lower()
    refused = _preflight(server, EVIL)
    assert "Access-Control-Allow-Origin" not in refused.headers
    posted = requests.post(server.url + "/api/stream", json={"message": "hi", "provider": "openai"},
                           headers={"Origin": SHOP}, timeout=10)
    assert posted.status_code == 200 and posted.headers["Access-Control-Allow-Origin"] == SHOP
    assert "X-Bupple-Stream-Id" in posted.headers["Access-Control-Expose-Headers"]
    assert _get(server, Origin=SHOP, **{"Sec-Fetch-Site": "cross-site"}).status_code == 200  # a listed origin
    assert _get(server, Origin=EVIL, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403


def test_cors_is_off_by_default(start_server) -> None:
    server = start_server()
    assert "Access-Control-Allow-Origin" not in _preflight(server, SHOP).headers
    assert "Access-Control-Allow-Origin" not in requests.get(server.url + "/api/providers", timeout=10,
                                                             headers={"Origin": SHOP}).headers
