"""A researcher with ``alto`` only, against a live portal and a real Celery worker: run --wait → list → make a
volume → attach it → detach it → shutdown → start → terminate → delete the volume, with --json parsed at each step."""

from __future__ import annotations

import pytest

from compute import execution
from compute.models import Instance
from tests.compute.conftest import (
    public_key_line,
    served_image,  # noqa: F401 - a fixture of the compute tests
)
from tests.compute.test_end_to_end import worker_host  # noqa: F401 - a fixture of that test

pytestmark = [
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True),
]


def test_a_researcher_runs_lists_stops_starts_and_terminates_a_vm_with_alto(
    celery_worker_process,
    alto,
    owner,
    project,
    token_of,
    types,
    networks,
    served_image,  # noqa: F811
    worker_host,  # noqa: F811
    tmp_path,
):
    token = token_of(owner)
    assert "t1.micro" in [t["name"] for t in alto("types", "--json", token=token).json()]
    public_key = tmp_path / "id_ed25519.pub"
    line = public_key_line()
    public_key.write_text(line + " ada@laptop\n")
    key = alto("keys", "ssh", "add", "laptop", str(public_key), "--json", token=token)
    assert key.exit_code == 0, key.stderr
    user_data = tmp_path / "cloud-init.yaml"
    user_data.write_text("#cloud-config\npackages: [htop]\n")
    run = alto(
        "vm",
        "run",
        served_image,
        "--name",
        "analysis",
        "--type",
        "t1.micro",
        "--network",
        "private",
        "--key",
        "laptop",  # by name; alto finds its id
        "--user-data",
        str(user_data),
        "--volatile-gib",
        "1",
        "--project",
        str(project.pk),
        "--wait",
        "--timeout",
        "90",
        "--json",
        token=token,
    )
    assert run.exit_code == 0, run.stderr
    vm = run.json()
    assert (vm["state"], vm["ip"], vm["host"]) == ("running", "10.10.0.2", worker_host.name)
    instance = Instance.objects.get(uuid=vm["id"])
    assert instance.user_data == "#cloud-config\npackages: [htop]\n"
    assert [key.split()[:2] for key in instance.ssh_keys] == [line.split()[:2]]

    listed = alto("vm", "list", "--json", token=token).json()
    assert [(v["id"], v["state"]) for v in listed] == [(vm["id"], "running")]
    table = alto("vm", "list", token=token)
    assert "analysis" in table.stdout and "10.10.0.2" in table.stdout

    # The console log lives on the host (the test driver runs no guest: write what one would print); alto asks the
    # server, which asks the host's worker.
    log = execution.instance_dir(instance) / "console.log"
    log.write_text("ALTO-SEED-KEY: ssh-ed25519 AAAA\nanalysis login: ")
    console = alto("vm", "console-log", vm["id"], token=token)
    assert console.exit_code == 0, console.stderr
    assert console.stdout.endswith("analysis login: ")

    made = alto(
        "volume",
        "create",
        "--name",
        "results",
        "--size",
        "1",
        "--project",
        str(project.pk),
        "--wait",
        "--timeout",
        "90",
        "--json",
        token=token,
    )
    assert made.exit_code == 0, made.stderr
    volume = made.json()
    assert (volume["kind"], volume["size_gib"], volume["state"]) == ("persistent", 1, "available")
    attached = alto("vm", "attach", vm["id"], volume["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert attached.exit_code == 0, attached.stderr
    assert volume["id"] in attached.json()["volumes"]  # beside the VM's volatile disk
    listed_volumes = {v["id"]: v for v in alto("volume", "list", "--json", token=token).json()}
    assert (listed_volumes[volume["id"]]["state"], listed_volumes[volume["id"]]["attached_to"]) == (
        "in-use",
        [vm["id"]],
    )
    in_use = alto("volume", "delete", volume["id"], token=token)
    assert in_use.exit_code == 1
    assert "[volume-in-use]" in in_use.stderr

    detached = alto("vm", "detach", vm["id"], volume["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert detached.exit_code == 0, detached.stderr
    assert volume["id"] not in detached.json()["volumes"]

    stopped = alto("vm", "shutdown", vm["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert stopped.exit_code == 0, stopped.stderr
    assert stopped.json()["state"] == "stopped"
    refused = alto("vm", "reboot", vm["id"], token=token)
    assert refused.exit_code == 1
    assert "stopped" in refused.stderr
    started = alto("vm", "start", vm["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert started.json()["state"] == "running"

    ended = alto("vm", "terminate", vm["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert ended.exit_code == 0, ended.stderr
    assert (ended.json()["state"], ended.json()["ip"]) == ("terminated", None)
    assert alto("vm", "show", vm["id"], "--json", token=token).json()["state"] == "terminated"
    deleted = alto("volume", "delete", volume["id"], "--wait", "--timeout", "90", "--json", token=token)
    assert deleted.exit_code == 0, deleted.stderr
    assert deleted.json()["state"] == "deleted"
