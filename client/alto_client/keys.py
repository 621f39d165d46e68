"""``alto keys`` (SSH keys for VMs, OpenPGP keys for endorsing) and ``alto token`` (API tokens)."""

from __future__ import annotations

from pathlib import Path

import click

from alto_client import gpg, output
from alto_client.api import UsageProblem
from alto_client.context import AltoGroup, Context, example, json_option, pass_ctx

SSH_COLUMNS = [("id", "ID"), ("name", "Name"), ("fingerprint", "Fingerprint"), ("created", "Added")]
PGP_COLUMNS = [
    ("fingerprint", "Fingerprint"),
    ("uids", "User IDs"),
    ("endorsing_uids", "May endorse as"),
    ("revoked", "Revoked"),
]


@click.group(
    cls=AltoGroup,
    invoke_without_command=True,
    help="Your SSH keys (put into VMs) and OpenPGP keys (sign Marketplace entries). Alone: list both."
    + example("alto keys\nalto keys ssh add laptop ~/.ssh/id_ed25519.pub\nalto keys pgp add --key 0123…CDEF"),
)
@json_option
@click.pass_context
def keys(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.find_object(Context)
    assert obj is not None  # noqa: S101 - the root command always makes it
    ssh = list(obj.api.pages("accounts/ssh-keys/", limit=1000))
    pgp = list(obj.api.pages("accounts/pgp-keys/", limit=1000))

    def human() -> None:
        output.table(ssh, SSH_COLUMNS, title="SSH keys")
        output.table(pgp, PGP_COLUMNS, title="OpenPGP keys")

    obj.show({"ssh": ssh, "pgp": pgp}, human)


@keys.group(cls=AltoGroup, help="SSH public keys.")
def ssh() -> None:
    pass


@ssh.command("list", help="Your SSH keys." + example("alto keys ssh list"))
@json_option
@pass_ctx
def ssh_list(obj: Context) -> None:
    rows = list(obj.api.pages("accounts/ssh-keys/", limit=1000))
    obj.show(rows, lambda: output.table(rows, SSH_COLUMNS, title="SSH keys"))


@ssh.command("add", help="Add an SSH public key." + example("alto keys ssh add laptop ~/.ssh/id_ed25519.pub"))
@click.argument("name")
@click.argument("public_key_file", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
def ssh_add(obj: Context, name: str, public_key_file: str) -> None:
    text = Path(public_key_file).read_text(encoding="utf-8").strip()
    if "PRIVATE KEY" in text:
        raise UsageProblem(f"{public_key_file} is a private key; give the .pub file")
    added = obj.api.post("accounts/ssh-keys/", {"name": name, "public_key": text})
    obj.show(added, lambda: output.fields(added, [("id", "ID"), ("name", "Name"), ("fingerprint", "Fingerprint")]))


@ssh.command("delete", help="Delete an SSH key." + example("alto keys ssh delete 7"))
@click.argument("key_id")
@pass_ctx
def ssh_delete(obj: Context, key_id: str) -> None:
    obj.api.delete(f"accounts/ssh-keys/{key_id}/")
    output.say(f"SSH key {key_id} deleted.")


@keys.group(cls=AltoGroup, help="OpenPGP public keys you endorse images with.")
def pgp() -> None:
    pass


@pgp.command("list", help="Your OpenPGP keys." + example("alto keys pgp list"))
@json_option
@pass_ctx
def pgp_list(obj: Context) -> None:
    rows = list(obj.api.pages("accounts/pgp-keys/", limit=1000))
    obj.show(rows, lambda: output.table(rows, PGP_COLUMNS, title="OpenPGP keys"))


@pgp.command(
    "add",
    help="Register an OpenPGP public key: an armored file, or --key to export it from your gpg keyring. One of its "
    "user IDs must carry your account's e-mail."
    + example("alto keys pgp add --key 0123456789ABCDEF0123456789ABCDEF01234567\nalto keys pgp add mykey.asc"),
)
@click.argument("armored_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--key", help="Export this key (fingerprint or e-mail) from gpg instead of reading a file.")
@click.option("--gnupghome", envvar="GNUPGHOME", help="The gpg keyring's directory [env GNUPGHOME].")
@json_option
@pass_ctx
def pgp_add(obj: Context, armored_file: str | None, key: str | None, gnupghome: str | None) -> None:
    if bool(armored_file) == bool(key):
        raise click.UsageError("give either an armored key file or --key")
    if key:
        chosen = gpg.secret_key(gnupghome or obj.settings.gnupghome, key)
        armored = gpg.public_key_armored(gnupghome or obj.settings.gnupghome, chosen["fingerprint"])
    else:
        armored = Path(armored_file or "").read_text(encoding="ascii", errors="replace")
    added = obj.api.post("accounts/pgp-keys/", {"armored": armored})
    obj.show(
        added,
        lambda: output.fields(
            added, [("fingerprint", "Fingerprint"), ("uids", "User IDs"), ("endorsing_uids", "May endorse as")]
        ),
    )


@pgp.command(
    "revoke", help="Revoke an OpenPGP key: entries it signed stop counting." + example("alto keys pgp revoke 0123…CDEF")
)
@click.argument("fingerprint")
@json_option
@pass_ctx
def pgp_revoke(obj: Context, fingerprint: str) -> None:
    revoked = obj.api.post(f"accounts/pgp-keys/{fingerprint}/revoke/")
    obj.show(revoked, lambda: output.say(f"OpenPGP key {fingerprint} revoked."))


@click.group(cls=AltoGroup, help="API tokens (alto login makes one for you).")
def token() -> None:
    pass


@token.command("list", help="Your API tokens." + example("alto token list"))
@json_option
@pass_ctx
def token_list(obj: Context) -> None:
    rows = list(obj.api.pages("accounts/tokens/", limit=1000))
    obj.show(
        rows,
        lambda: output.table(
            rows,
            [
                ("id", "ID"),
                ("name", "Name"),
                ("prefix", "Starts with"),
                ("created", "Created"),
                ("expires", "Expires"),
                ("expired", "Expired"),
            ],
            title="API tokens",
        ),
    )


@token.command(
    "create",
    help="Make a token for a script; it is shown once." + example("alto token create ci-pipeline --days 30"),
)
@click.argument("name")
@click.option(
    "--days", type=click.IntRange(min=1), help="Days until it expires [default: never, or your token's expiry]."
)
@json_option
@pass_ctx
def token_create(obj: Context, name: str, days: int | None) -> None:
    body: dict = {"name": name}
    if days is not None:
        body["expires_in_days"] = days
    made = obj.api.post("accounts/tokens/", body)
    obj.show(
        made,
        lambda: output.fields(
            made, [("id", "ID"), ("name", "Name"), ("token", "Token (shown once)"), ("expires", "Expires")]
        ),
    )


@token.command("revoke", help="Revoke a token." + example("alto token revoke 12"))
@click.argument("token_id")
@pass_ctx
def token_revoke(obj: Context, token_id: str) -> None:
    obj.api.delete(f"accounts/tokens/{token_id}/")
    output.say(f"Token {token_id} revoked.")


def register(root: click.Group) -> None:
    root.add_command(keys)
    root.add_command(token)
