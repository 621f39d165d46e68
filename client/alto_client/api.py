"""The REST API over httpx, and the errors alto exits with: 1 the API refused, 3 cannot reach the server,
4 not logged in (2, a usage error, is click's own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import click
import httpx

from alto_client import __version__

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_LOGGED_IN = 4


class AltoError(click.ClickException):
    """An error alto reports on standard error and exits with ``exit_code``."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, *, lines: list[str] | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.lines = lines or []
        self.body = body

    def show(self, file: Any = None) -> None:
        from alto_client.output import show_error

        show_error(self)


class Refused(AltoError):
    """The API answered 4xx/5xx: its ``detail``, ``code`` and the lines that say why (rules, quotas, fields)."""

    def __init__(self, status: int, body: Any) -> None:
        detail, code, lines = _explain(status, body)
        super().__init__(f"{detail} [{code}]" if code else detail, lines=lines, body=body)
        self.status = status
        self.code = code
        self.detail = detail


class Unreachable(AltoError):
    exit_code = EXIT_UNREACHABLE


class NotLoggedIn(AltoError):
    exit_code = EXIT_NOT_LOGGED_IN


class UsageProblem(AltoError):
    """Bad input the API was never asked about (a missing file, a contradictory option)."""

    exit_code = EXIT_USAGE


def uuid_of(value: str, what: str) -> uuid.UUID:
    """``value`` as a UUID (the ids of VMs and volumes), or a usage error saying it should be ``what``."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise UsageProblem(f"{value!r} is not {what}") from None


def _explain(status: int, body: Any) -> tuple[str, str, list[str]]:
    if not isinstance(body, Mapping):
        text = str(body or "").strip().splitlines()
        return f"the server answered HTTP {status}" + (f": {text[0][:200]}" if text else ""), "", []
    detail = str(body.get("detail") or f"the server answered HTTP {status}")
    code = str(body.get("code") or "")
    lines: list[str] = []
    for rule in body.get("rules") or []:  # a policy decision's failed rules
        if isinstance(rule, Mapping):
            lines.append(f"{rule.get('rule')}: {rule.get('reason')}")
    errors = body.get("errors")
    if isinstance(errors, list):  # metadata problems: [{"rule", "message"}]
        lines += [f"{e.get('rule')}: {e.get('message')}" for e in errors if isinstance(e, Mapping)]
    elif isinstance(errors, Mapping):  # field errors
        for name, messages in errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                lines.append(f"{name}: {message}")
    return detail, code, lines


class Api:
    """One endpoint with (optionally) a token. Every call returns the decoded JSON or raises an AltoError."""

    def __init__(self, endpoint: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.token = token
        headers = {"User-Agent": f"alto/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        self.http = httpx.Client(base_url=f"{endpoint}/api/v1/", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, *, auth_required: bool = True, **kwargs: Any) -> httpx.Response:
        if auth_required and not self.token:
            raise NotLoggedIn(f"not logged in to {self.endpoint}: run `alto login` (or set ALTO_TOKEN)")
        try:
            response = self.http.request(method, path.lstrip("/"), **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.endpoint}: {exc}") from None
        if response.status_code == 401:
            raise NotLoggedIn(
                f"{self.endpoint} does not accept your credentials ({_detail(response)}): run `alto login`"
            )
        if response.status_code >= 400:
            raise Refused(response.status_code, _body(response))
        return response

    def relative(self, url: str) -> str:
        """The API path of ``url``, a link the server gave (``url`` fields); refused unless it is on this endpoint,
        so that a link never carries the token elsewhere."""
        base = httpx.URL(f"{self.endpoint}/api/v1/")
        link = base.join(url)
        path = link.raw_path.decode("ascii")
        if (link.scheme, link.host, link.port) != (base.scheme, base.host, base.port) or not path.startswith(
            base.raw_path.decode("ascii")
        ):
            raise AltoError(f"the server linked to {url}, outside {self.endpoint}/api/v1/; not following it")
        return path[len(base.raw_path) :]

    def get(self, path: str, *, auth_required: bool = True, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v not in (None, "", ())}
        return self.request("GET", path, params=clean, auth_required=auth_required).json()

    def post(self, path: str, json: Any = None, *, auth_required: bool = True, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=json, auth_required=auth_required, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str) -> Any:
        response = self.request("DELETE", path)
        return response.json() if response.content else None

    def pages(self, path: str, *, limit: int, auth_required: bool = True, **params: Any) -> Iterator[dict]:
        """Up to ``limit`` results of a paginated list, following ``next``."""
        page = 1
        given = 0
        while given < limit:
            body = self.get(path, auth_required=auth_required, page=page, page_size=min(limit, 100), **params)
            results = body["results"] if isinstance(body, Mapping) else body
            for item in results:
                if given >= limit:
                    return
                given += 1
                yield item
            if not isinstance(body, Mapping) or not body.get("next"):
                return
            page += 1


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _detail(response: httpx.Response) -> str:
    body = _body(response)
    return str(body.get("detail")) if isinstance(body, Mapping) else f"HTTP {response.status_code}"
