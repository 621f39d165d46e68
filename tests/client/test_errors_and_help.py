"""What ``alto`` answers when things go wrong, one exit code per kind (0 ok, 1 refused by the API, 2 usage,
3 unreachable, 4 not logged in); and that every command has help with an example."""

from __future__ import annotations

import json
import socket

import click
import pytest
from alto_client.cli import alto as alto_command

from marketplace import services as marketplace_services

pytestmark = pytest.mark.django_db(transaction=True)

VM_ID = "3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90"


def test_usage_errors_exit_2_before_asking_the_server(alto, owner, token_of):
    token = token_of(owner)
    assert alto("vm", "run", token=token).exit_code == 2  # the image is missing
    assert alto("vm", "run", "X" * 27, "--network", "moon", token=token).exit_code == 2
    assert alto("image", "validate", "/no/such/entry.xml").exit_code == 2
    not_an_id = alto("vm", "show", "../../admin/", token=token)
    assert not_an_id.exit_code == 2
    assert "not a VM id" in not_an_id.stderr
    assert alto("frobnicate").exit_code == 2


def test_a_server_that_does_not_answer_exits_3(alto):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        unreachable = alto("image", "search", endpoint=f"http://127.0.0.1:{port}")
    assert unreachable.exit_code == 3
    assert "cannot reach" in unreachable.stderr


def test_no_token_or_a_bad_one_exits_4(alto, owner):
    missing = alto("quota")
    assert missing.exit_code == 4
    assert "alto login" in missing.stderr
    bad = alto("vm", "list", token="not-a-token")
    assert bad.exit_code == 4


def test_a_refusal_exits_1_with_the_servers_reason_and_the_failed_rules(
    alto, owner, project, token_of, types, networks, registered, entry_for
):
    token = token_of(owner)
    unknown = alto("vm", "run", "A" * 27, "--project", str(project.pk), token=token)
    assert unknown.exit_code == 1
    assert "no such image in the Marketplace [image-unknown]" in unknown.stderr

    registered(owner, "owner")
    entry = marketplace_services.entry_upload(raw=entry_for("owner", deprecated="broken"), uploader=owner)
    denied = alto("vm", "run", entry.image.identifier, "--project", str(project.pk), token=token)
    assert denied.exit_code == 1
    assert "[policy-denied]" in denied.stderr
    assert "  - min_endorsements: " in denied.stderr  # the failed rule, on its own line

    missing = alto("vm", "show", VM_ID, token=token)
    assert missing.exit_code == 1
    assert "[not_found]" in missing.stderr

    # With --json a script reads the refusal as JSON too.
    scripted = alto("--json", "vm", "run", entry.image.identifier, "--project", str(project.pk), token=token)
    assert scripted.exit_code == 1
    refusal = json.loads(scripted.stderr)
    assert (refusal["code"], refusal["status"], refusal["exit_code"]) == ("policy-denied", 403, 1)
    assert any(line.startswith("min_endorsements: ") for line in refusal["lines"])


def test_json_output_is_parseable_and_tables_are_the_default(alto, owner, token_of, types):
    token = token_of(owner)
    as_json = alto("--json", "types", token=token)
    assert {t["name"] for t in as_json.json()} >= {"t1.micro", "m1.small", "c1.xlarge"}
    assert alto("types", "--json", token=token).json() == as_json.json()
    table = alto("types", token=token)
    assert "t1.micro" in table.stdout and "RAM MiB" in table.stdout
    assert alto("capacity", "--json", token=token).exit_code == 0
    quota = alto("quota", "--json", token=token).json()
    assert quota["user"]["username"] == "owner"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_alto_help_lists_every_command_and_each_has_an_example(alto):
    listed = {" ".join(path) for path, _ in _commands(alto_command)}
    assert listed >= {
        "image build-metadata",
        "image sign",
        "image validate",
        "image upload",
        "image deprecate",
        "image search",
        "image show",
        "image policy",
        "vm run",
        "vm list",
        "vm show",
        "vm start",
        "vm shutdown",
        "vm kill",
        "vm reboot",
        "vm terminate",
        "vm console-log",
        "vm attach",
        "vm detach",
        "volume create",
        "volume list",
        "volume show",
        "volume delete",
        "quota",
        "types",
        "capacity",
        "keys",
        "keys ssh add",
        "keys pgp add",
        "token",
        "token create",
        "login",
        "completion",
    }
    assert all(name in alto("--help").stdout for name in ("image", "vm", "volume", "quota", "keys", "token", "login"))
    for path, command in _commands(alto_command):
        if isinstance(command, click.Group) and not command.invoke_without_command:
            continue
        shown = alto(*path, "--help")
        assert shown.exit_code == 0
        assert "Example:" in shown.stdout, f"alto {' '.join(path)} --help has no example"


def test_shell_completion_scripts_are_printed(alto):
    bash = alto("completion", "bash")
    assert bash.exit_code == 0
    assert "_ALTO_COMPLETE" in bash.stdout


def test_links_from_the_server_are_followed_only_on_its_own_endpoint():
    from alto_client.api import AltoError, Api

    api = Api("https://cloud.example.org/portal", token="secret")
    assert api.relative("https://cloud.example.org/portal/api/v1/marketplace/entries/X/a%40b.org/2026/") == (
        "marketplace/entries/X/a%40b.org/2026/"
    )
    for elsewhere in (
        "https://evil.example.net/portal/api/v1/marketplace/entries/X/",
        "http://cloud.example.org/portal/api/v1/marketplace/entries/X/",
        "https://cloud.example.org:8443/portal/api/v1/x/",
        "https://cloud.example.org/other/api/v1/x/",
        "//evil.example.net/portal/api/v1/x/",
    ):
        with pytest.raises(AltoError):
            api.relative(elsewhere)


def test_tokens_are_made_listed_and_revoked(alto, owner, token_of):
    token = token_of(owner)
    made = alto("token", "create", "ci", "--days", "7", "--json", token=token)
    assert made.exit_code == 0, made.stderr
    listed = alto("token", "list", "--json", token=token).json()
    assert [t["name"] for t in listed] == ["ci"]
    assert alto("quota", "--json", token=made.json()["token"]).exit_code == 0
    assert alto("token", "revoke", str(made.json()["id"]), token=token).exit_code == 0
    assert alto("quota", token=made.json()["token"]).exit_code == 4


def test_an_ssh_key_name_that_is_not_yours_is_a_usage_error(alto, owner, token_of, project):
    unknown = alto("vm", "run", "A" * 27, "--key", "desktop", "--project", str(project.pk), token=token_of(owner))
    assert unknown.exit_code == 2
    assert "no SSH key named 'desktop'" in unknown.stderr


def test_login_refuses_to_send_a_password_over_plain_http_to_another_host(alto):
    refused = alto("login", "--username", "ada", endpoint="http://cloud.example.org", input="secret\n")
    assert refused.exit_code == 2
    assert "not HTTPS" in refused.stderr
