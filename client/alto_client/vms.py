"""``alto vm``: run, list, show and act on virtual machines; attach and detach volumes."""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from pathlib import Path

import click
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from alto_client import output
from alto_client.api import AltoError, Refused, UsageProblem, uuid_of
from alto_client.context import AltoGroup, Context, example, json_option, pass_ctx
from alto_client.volumes import wait_volume

SETTLED = {"running", "stopped", "terminated", "error"}
VM_COLUMNS = [
    ("id", "ID"),
    ("name", "Name"),
    ("state", "State"),
    ("instance_type", "Type"),
    ("image", "Image"),
    ("ip", "IP"),
    ("host", "Host"),
    ("project", "Project"),
]
VM_FIELDS = [
    ("id", "ID"),
    ("name", "Name"),
    ("state", "State"),
    ("state_message", "Message"),
    ("image", "Image"),
    ("instance_type", "Type"),
    ("vcpus", "vCPU"),
    ("ram_mib", "RAM MiB"),
    ("root_gib", "Root GiB"),
    ("volatile_gib", "Volatile GiB"),
    ("network", "Network"),
    ("ip", "IP"),
    ("mac", "MAC"),
    ("host", "Host"),
    ("access_lines", "Access"),
    ("volumes", "Volumes"),
    ("project", "Project"),
    ("policy_warnings", "Policy warnings"),
    ("created", "Created"),
]


class VmFailed(AltoError):
    """The VM ended in error (or another state than the one waited for)."""


def _path(vm_id: str) -> str:
    return f"compute/instances/{uuid_of(vm_id, 'a VM id (a UUID, as `alto vm list` shows)')}/"


def _state_line(vm: dict, elapsed: int) -> Text:
    colour = {"running": "green", "error": "red", "stopped": "yellow", "terminated": "dim"}.get(vm["state"], "cyan")
    return Text.assemble(
        (f"{vm['name']} ", "bold"), (vm["state"], colour), f"  {vm.get('state_message') or ''}  ({elapsed}s)"
    )


def wait_for(obj: Context, vm_id: str, target: str, *, timeout: float, interval: float = 1.0) -> dict:
    """Poll the VM until it is ``target`` (or error), showing its state live on standard error (not with
    --json); the VM as last seen. Raises VmFailed when it ends in another state or the time is up."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    spinner = Spinner("dots", text="")
    display = nullcontext() if obj.as_json else Live(spinner, console=output.errors, transient=True)
    with display:
        while True:
            vm = obj.api.get(_path(vm_id))
            spinner.update(text=_state_line(vm, int(time.monotonic() - started)))
            if vm["state"] == target or vm["state"] in ("error", "terminated"):
                break
            if time.monotonic() > deadline:
                raise VmFailed(f"{vm['name']} is still {vm['state']} after {int(timeout)}s (waiting for {target})")
            time.sleep(interval)
    if vm["state"] != target:
        raise VmFailed(f"{vm['name']} ended {vm['state']}: {vm.get('state_message') or 'no message'}")
    return vm


def access_line(link: dict) -> str:
    """How to reach a VM through one translated port: the ssh command, the URL, or ``service host:port``."""
    return link.get("command") or link.get("url") or f"{link['service']} {link['host']}:{link['port']}"


def _show_vm(obj: Context, vm: dict) -> None:
    human = {**vm, "access_lines": "\n".join(access_line(link) for link in vm.get("access") or [])}
    obj.show(vm, lambda: output.fields(human, VM_FIELDS))


wait_option = click.option("--wait", is_flag=True, help="Wait until the action is done, showing the VM's state.")
timeout_option = click.option("--timeout", type=float, default=600, show_default=True, help="Seconds --wait waits.")


@click.group(cls=AltoGroup, help="Virtual machines: run one from a Marketplace image, watch it, act on it.")
def vm() -> None:
    pass


@vm.command(
    help="Run a VM from a Marketplace image. The site policy is checked first (a refusal names the failed rules) "
    "and the project's quota reserved; --wait shows its state until it runs."
    + example(
        "alto vm run No5o-5ea0sNMlW_75VgGJCv2AcJ --type m1.small --network private --key laptop \\\n"
        "    --user-data cloud-init.yaml --wait"
    )
)
@click.argument("image")
@click.option("--name", help="The VM's name [default: vm-<random>].")
@click.option("--type", "instance_type", help="Instance type (alto types) [default: the site's].")
@click.option("--network", type=click.Choice(["private", "local", "public"]), default="private", show_default=True)
@click.option("--key", "keys", multiple=True, help="SSH key: name, id or fingerprint (alto keys ssh); repeatable.")
@click.option("--user-data", type=click.Path(exists=True, dir_okay=False), help="cloud-init user-data file.")
@click.option("--volatile-gib", type=click.IntRange(min=0), default=0, help="A scratch disk of this size.")
@click.option("--volume", "volumes", multiple=True, help="Volume id (alto volume list) to attach; repeatable.")
@click.option("--project", type=int, help="Project id [default: profile's, else your personal project].")
@wait_option
@timeout_option
@json_option
@pass_ctx
def run(
    obj: Context,
    image: str,
    name: str | None,
    instance_type: str | None,
    network: str,
    keys: tuple[str, ...],
    user_data: str | None,
    volatile_gib: int,
    volumes: tuple[str, ...],
    project: int | None,
    wait: bool,
    timeout: float,
) -> None:
    body = {
        "name": name or f"vm-{uuid.uuid4().hex[:8]}",
        "image": image,
        "network": network,
        "ssh_keys": _ssh_key_ids(obj, keys),
        "user_data": Path(user_data).read_text(encoding="utf-8") if user_data else "",
        "volatile_gib": volatile_gib,
        "volumes": list(volumes),
        "project": obj.project(project),
    }
    if instance_type:
        body["instance_type"] = instance_type
    # One key per invocation: a retried POST after a lost answer does not start a second VM.
    created = obj.api.post("compute/instances/", body, headers={"Idempotency-Key": str(uuid.uuid4())})
    if not wait:
        _show_vm(obj, created)
        return
    _show_vm(obj, wait_for(obj, created["id"], "running", timeout=timeout))


def _ssh_key_ids(obj: Context, chosen: tuple[str, ...]) -> list[str]:
    """The keys as the API takes them (ids or fingerprints): names are looked up among your keys."""
    if all(key.isdigit() or key.startswith("SHA256:") for key in chosen):
        return list(chosen)
    mine = list(obj.api.pages("accounts/ssh-keys/", limit=1000))
    by_name = {key["name"]: str(key["id"]) for key in mine}
    ids = []
    for key in chosen:
        if key.isdigit() or key.startswith("SHA256:"):
            ids.append(key)
        elif key in by_name:
            ids.append(by_name[key])
        else:
            names = ", ".join(sorted(by_name)) or "none: add one with `alto keys ssh add`"
            raise UsageProblem(f"you have no SSH key named {key!r} (yours: {names})")
    return ids


@vm.command("list", help="Your projects' VMs, newest first." + example("alto vm list --state running"))
@click.option("--state", help="Only VMs in this state (pending, running, stopped, error, …).")
@click.option("--project", type=int, help="Only this project's.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
@pass_ctx
def list_(obj: Context, state: str | None, project: int | None, limit: int) -> None:
    rows = list(obj.api.pages("compute/instances/", limit=limit, state=state, project=project))
    obj.show(rows, lambda: output.table(rows, VM_COLUMNS, title="VMs"))


@vm.command(help="One VM." + example("alto vm show 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90"))
@click.argument("vm_id")
@json_option
@pass_ctx
def show(obj: Context, vm_id: str) -> None:
    _show_vm(obj, obj.api.get(_path(vm_id)))


def _action(name: str, target: str, text: str) -> click.Command:
    @click.argument("vm_id")
    @wait_option
    @timeout_option
    @json_option
    @pass_ctx
    def act(obj: Context, vm_id: str, wait: bool, timeout: float) -> None:
        shown = obj.api.post(f"{_path(vm_id)}{name}/")
        if wait:
            shown = wait_for(obj, vm_id, target, timeout=timeout)
        _show_vm(obj, shown)

    return click.command(name, help=text + example(f"alto vm {name} 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 --wait"))(act)


vm.add_command(_action("start", "running", "Start a stopped VM."))
vm.add_command(_action("shutdown", "stopped", "Shut a running VM down (ACPI: the guest powers itself off)."))
vm.add_command(_action("kill", "stopped", "Power a VM off at once (no clean shutdown)."))
vm.add_command(_action("reboot", "running", "Reboot a running VM."))


@vm.command(
    help="Terminate a VM: its domain is destroyed, its root disk quarantined, its address and quota freed. "
    "Persistent volumes survive." + example("alto vm terminate 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 --wait")
)
@click.argument("vm_id")
@wait_option
@timeout_option
@json_option
@pass_ctx
def terminate(obj: Context, vm_id: str, wait: bool, timeout: float) -> None:
    shown = obj.api.delete(_path(vm_id))
    if wait:
        shown = wait_for(obj, vm_id, "terminated", timeout=timeout)
    _show_vm(obj, shown)


@vm.command(
    "console-log",
    help="The VM's serial console log (what the guest printed while booting)."
    + example("alto vm console-log 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90"),
)
@click.argument("vm_id")
@pass_ctx
def console_log(obj: Context, vm_id: str) -> None:
    try:
        response = obj.api.request("GET", f"{_path(vm_id)}console/", headers={"Accept": "text/plain"})
    except Refused as refused:
        if refused.status == 404 and refused.code in ("", "not_found"):
            obj.api.get(_path(vm_id))  # the VM's own 404 first, if it is the VM that is missing
            raise AltoError(f"{obj.settings.endpoint} does not serve console logs (no console endpoint)") from None
        raise
    click.echo(response.text, nl=False)


@vm.command(
    help="Attach a volume to a running VM (hot-plug)."
    + example("alto vm attach 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 5d0c3a8e-2f41-4b7a-9e6d-1a2b3c4d5e6f --wait")
)
@click.argument("vm_id")
@click.argument("volume")
@wait_option
@timeout_option
@json_option
@pass_ctx
def attach(obj: Context, vm_id: str, volume: str, wait: bool, timeout: float) -> None:
    shown = obj.api.post(f"{_path(vm_id)}attach/", {"volume": volume})
    if wait:
        wait_volume(obj, volume, "in-use", timeout=timeout)
        shown = obj.api.get(_path(vm_id))
    _show_vm(obj, shown)


@vm.command(
    help="Detach a volume from a VM."
    + example("alto vm detach 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 5d0c3a8e-2f41-4b7a-9e6d-1a2b3c4d5e6f --wait")
)
@click.argument("vm_id")
@click.argument("volume")
@wait_option
@timeout_option
@json_option
@pass_ctx
def detach(obj: Context, vm_id: str, volume: str, wait: bool, timeout: float) -> None:
    shown = obj.api.post(f"{_path(vm_id)}detach/", {"volume": volume})
    if wait:
        wait_volume(obj, volume, "available", timeout=timeout)
        shown = obj.api.get(_path(vm_id))
    _show_vm(obj, shown)


def register(root: click.Group) -> None:
    root.add_command(vm)


FIREWALL_COLUMNS = [("id", "ID"), ("protocol", "Protocol"), ("port", "Port"), ("source", "Source"), ("origin", "From")]


@vm.group(
    cls=AltoGroup,
    help="A VM's firewall: the new connections it lets in (everything else new is dropped). It starts with its "
    "image's ports; add rules for the ports your site lets users open.",
)
def firewall() -> None:
    pass


@firewall.command(
    "list", help="The VM's firewall rules." + example("alto vm firewall list 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90")
)
@click.argument("vm_id")
@json_option
@pass_ctx
def firewall_list(obj: Context, vm_id: str) -> None:
    rules = obj.api.get(f"{_path(vm_id)}firewall/")
    obj.show(rules, lambda: output.table(rules, FIREWALL_COLUMNS, title="firewall rules"))


@firewall.command(
    "add",
    help="Let new connections in: a protocol, a port (none for icmp) and the sources allowed (CIDR)."
    + example("alto vm firewall add 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 --port 8080 --source 198.51.100.0/24"),
)
@click.argument("vm_id")
@click.option("--protocol", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True)
@click.option("--port", type=int, help="The VM's port (tcp, udp).")
@click.option("--source", default="0.0.0.0/0", show_default=True, help="Where the connections may come from.")
@json_option
@pass_ctx
def firewall_add(obj: Context, vm_id: str, protocol: str, port: int | None, source: str) -> None:
    rule = obj.api.post(f"{_path(vm_id)}firewall/", {"protocol": protocol, "port": port, "source": source})
    obj.show(rule, lambda: output.fields(rule, FIREWALL_COLUMNS))


@firewall.command(
    "delete",
    help="Delete a rule (its ID from alto vm firewall list)."
    + example("alto vm firewall delete 3f2b9c1e-8d4a-4f7e-9a51-0c6d2e7b8a90 12"),
)
@click.argument("vm_id")
@click.argument("rule_id", type=int)
@pass_ctx
def firewall_delete(obj: Context, vm_id: str, rule_id: int) -> None:
    obj.api.delete(f"{_path(vm_id)}firewall/{rule_id}/")
    output.say(f"Deleted firewall rule {rule_id}.")
