"""/docs and /redoc are served with no CDN: every script and stylesheet comes from this app.
(The page is opened in Chromium with the network cut in tests/service/test_server.py.)"""

from __future__ import annotations

import re

import pytest

from tests.helpers import Served

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(served: Served, page: str) -> None:
    r = await served.client.get(page)
    assert r.status_code == 200
    urls = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', r.text)
    urls += re.findall(r"url: ?['\"]([^'\"]+)['\"]", r.text)
    assert urls, r.text
    for url in urls:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        asset = await served.client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert "cdn" not in r.text.lower() and "fonts.googleapis" not in r.text


async def test_docs_assets_are_a_fixed_list(served: Served) -> None:
    js = await served.client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for name in ("..%2F__init__.py", "core.py", "nothing.js"):
        r = await served.client.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
    assert "/docs/assets/{name}" not in (await served.client.get("/openapi.json")).json()["paths"]
