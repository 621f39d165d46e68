"""What every command shares: the context (settings, --json, the API client), the help's example block, and
the --json option subcommands repeat."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from alto_client import config, output
from alto_client.api import Api, UsageProblem


class Context:
    """What every command gets: the settings, ``--json``, and the API client (made on first use)."""

    def __init__(self, settings: config.Settings, as_json: bool) -> None:
        self.settings = settings
        self._api: Api | None = None
        self.as_json = as_json

    @property
    def as_json(self) -> bool:
        return output.json_mode

    @as_json.setter
    def as_json(self, value: bool) -> None:
        output.json_mode = value

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(self.settings.endpoint, self.settings.token)
        return self._api

    def show(self, data: Any, human: Callable[[], None]) -> None:
        """JSON of ``data`` with --json, else what ``human`` prints."""
        if self.as_json:
            output.emit_json(data)
        else:
            human()

    def project(self, given: int | None) -> int:
        """The project to act in: --project, the profile's, else your personal project."""
        if given is not None:
            return given
        if self.settings.project is not None:
            return self.settings.project
        me = self.api.get("accounts/me/")
        personal = next((p for p in me["projects"] if p.get("personal")), None)
        if personal is None:
            raise UsageProblem("you have no personal project: name one with --project")
        return int(personal["id"])


pass_ctx = click.make_pass_decorator(Context)


def example(text: str) -> str:
    """The help's example block (click keeps \\b paragraphs as written)."""
    lines = "\n".join(f"  {line}" for line in text.strip().splitlines())
    return f"\n\n\b\nExample:\n{lines}"


def json_option(function: Callable) -> Callable:
    """--json on a subcommand as well as before it (``alto --json vm list`` = ``alto vm list --json``)."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(Context).as_json = True
        return value

    return click.option(
        "--json", "as_json", is_flag=True, expose_value=False, callback=set_json, help="Print JSON for scripts."
    )(function)


class AltoGroup(click.Group):
    """Commands listed in the order they were added, which is the order a user meets them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
