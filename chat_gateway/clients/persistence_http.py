"""The HTTP client under the persistence client (persistence.py): httpx's, keeping no cookies."""

from typing import Any

import httpx


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Persistence sets none: looking for them in every reply (httpx wraps it in urllib's request and
        response for its cookie jar) cost 2% of a relayed stream's CPU."""


class PersistenceHttp(httpx.AsyncClient):
    """httpx's client, keeping no cookies from replies."""

    def __init__(self, **options: Any) -> None:
        self._kept = _NoCookies()
        super().__init__(**options)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._kept

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # what httpx.Cookies takes
        self._kept = _NoCookies(cookies)
