"""The ``alto`` command: the root group, its global options and the account commands. Images, VMs and volumes
live in their own modules and are added here."""

from __future__ import annotations

import contextlib
import ipaddress
import platform
from typing import Any

import click
import httpx

from alto_client import __version__, config, images, keys, output, vms, volumes
from alto_client.api import AltoError, NotLoggedIn, Refused, Unreachable, UsageProblem
from alto_client.context import AltoGroup, Context, example, json_option, pass_ctx


@click.group(
    cls=AltoGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    help="alto: the Altostratus command-line client (Marketplace images, VMs, volumes, quotas)."
    + example("alto login\nalto image search --os Ubuntu\nalto vm run IDENTIFIER --type m1.small --wait")
    + "\n\nExit codes: 0 done, 1 the server refused (its reason is printed), 2 usage error, 3 cannot reach the "
    "server, 4 not logged in. Shell completion: `alto completion bash` (or zsh, fish).",
)
@click.option("--profile", envvar="ALTO_PROFILE", help="Profile of ~/.config/alto/config.toml [env ALTO_PROFILE].")
@click.option("--endpoint", envvar="ALTO_ENDPOINT", help="The portal's address [env ALTO_ENDPOINT].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.version_option(__version__, prog_name="alto")
@click.pass_context
def alto(ctx: click.Context, profile: str | None, endpoint: str | None, as_json: bool) -> None:
    output.json_mode = as_json
    try:
        settings = config.load(profile=profile, endpoint=endpoint)
    except config.ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    ctx.obj = Context(settings, as_json)


# --- account ---------------------------------------------------------------------------------------------------


@alto.command(
    help="Log in: asks for your username and password, and stores an API token for this profile "
    "(~/.config/alto/credentials.json, readable by you only). The password is sent once, to make the token."
    + example("alto login\nalto --profile lab --endpoint https://cloud.lab.example.org login --username ada")
)
@click.option("--username", help="Your username (asked when left out).")
@click.option("--days", type=click.IntRange(min=1), default=90, show_default=True, help="Days until the token expires.")
@click.option("--allow-http", is_flag=True, help="Send the password over plain HTTP to a host other than this one.")
@json_option
@pass_ctx
def login(obj: Context, username: str | None, days: int, allow_http: bool) -> None:
    url = httpx.URL(obj.settings.endpoint)
    if url.scheme != "https" and not _loopback(url.host) and not allow_http:
        raise UsageProblem(
            f"{obj.settings.endpoint} is not HTTPS: your password would cross the network readable by anyone on "
            "the way. Use the https:// address (or --allow-http if you must)."
        )
    username = username or click.prompt("Username")
    password = click.prompt("Password", hide_input=True)
    name = f"alto on {platform.node() or 'this machine'}"[:100]
    try:
        response = httpx.post(
            f"{obj.settings.endpoint}/api/v1/accounts/tokens/",
            json={"name": name, "expires_in_days": days},
            auth=(username, password),
            headers={"Accept": "application/json", "User-Agent": f"alto/{__version__}"},
            timeout=30.0,
        )
    except httpx.TransportError as exc:
        raise Unreachable(f"cannot reach {obj.settings.endpoint}: {exc}") from None
    body = _json_or_text(response)
    if response.status_code in (401, 403):
        detail = body.get("detail") if isinstance(body, dict) else None
        raise NotLoggedIn(f"login refused: {detail or 'wrong username or password'}")
    if response.status_code != 201:
        raise Refused(response.status_code, body)
    path = config.store_token(obj.settings, token=body["token"], token_id=body["id"], username=username)
    obj.show(
        {
            "profile": obj.settings.profile,
            "endpoint": obj.settings.endpoint,
            "username": username,
            "token_id": body["id"],
            "expires": body["expires"],
        },
        lambda: output.say(
            f"Logged in to {obj.settings.endpoint} as {username}; token {body['id']} expires {body['expires']} "
            f"(stored in {path})."
        ),
    )


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


@alto.command(help="Log out: revoke this profile's stored token on the server and forget it." + example("alto logout"))
@pass_ctx
def logout(obj: Context) -> None:
    stored = config.stored_login(obj.settings)
    if stored.get("token_id") and obj.settings.token:
        # Already revoked or expired: forgetting it is all that is left.
        with contextlib.suppress(NotLoggedIn, Refused):
            obj.api.delete(f"accounts/tokens/{stored['token_id']}/")
    config.forget_token(obj.settings)
    output.say(f"Logged out of {obj.settings.endpoint} (profile {obj.settings.profile}).")


@alto.command(help="Your projects with their quotas and what is used." + example("alto quota\nalto quota --json"))
@json_option
@pass_ctx
def quota(obj: Context) -> None:
    me = obj.api.get("accounts/me/")

    def human() -> None:
        output.say(f"{me['user']['username']} <{me['user']['email']}>")
        if not me["projects"]:
            output.say("You are in no project yet.")
        for project in me["projects"]:
            rows = [
                {
                    "resource": name,
                    "used": usage["used"],
                    "limit": usage["limit"],
                    "free": usage["limit"] - usage["used"],
                }
                for name, usage in project["quotas"].items()
            ]
            personal = " (personal)" if project.get("personal") else ""
            output.table(
                rows,
                [("resource", "Resource"), ("used", "Used"), ("limit", "Quota"), ("free", "Free")],
                title=f"Project {project['id']} {project['name']}{personal}, {project.get('role') or 'staff'}",
            )

    obj.show(me, human)


@alto.command(help="The instance types this site offers." + example("alto types"))
@json_option
@pass_ctx
def types(obj: Context) -> None:
    rows = list(obj.api.pages("compute/instance-types/", limit=1000))
    obj.show(
        rows,
        lambda: output.table(
            rows,
            [
                ("name", "Type"),
                ("vcpus", "vCPU"),
                ("ram_mib", "RAM MiB"),
                ("swap_mib", "Swap MiB"),
                ("root_gib", "Root GiB"),
                ("is_default", "Default"),
            ],
            title="Instance types",
        ),
    )


@alto.command(help="Room for VMs: per instance type, how many more fit on the cluster now." + example("alto capacity"))
@json_option
@pass_ctx
def capacity(obj: Context) -> None:
    rows = obj.api.get("compute/capacity/")
    obj.show(
        rows,
        lambda: output.table(
            rows,
            [
                ("instance_type", "Type"),
                ("vcpus", "vCPU"),
                ("ram_mib", "RAM MiB"),
                ("fits_now", "Fits now"),
                ("fits_when_empty", "Fits when empty"),
            ],
            title="Room for VMs",
        ),
    )


@alto.command(
    help="Print the shell completion script for bash, zsh or fish."
    + example(
        'eval "$(alto completion bash)"      # in ~/.bashrc\n'
        "alto completion fish > ~/.config/fish/completions/alto.fish"
    )
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    if completer is None:  # pragma: no cover - click ships all three
        raise UsageProblem(f"no completion for {shell}")
    click.echo(completer(alto, {}, "alto", "_ALTO_COMPLETE").source())


for _module in (images, vms, volumes, keys):
    _module.register(alto)


def main() -> None:
    try:
        alto.main(prog_name="alto", standalone_mode=True)
    except AltoError as error:  # raised outside click's own handling (e.g. while exiting)
        error.show()
        raise SystemExit(error.exit_code) from None


__all__ = ["alto", "main"]
