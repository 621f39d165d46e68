"""CPU use of running instances (the dashboard's "CPU % now").

The host's worker samples libvirt's cumulative CPU time of each running domain (``hypervisor.domains_cpu_time``)
and keeps the latest sample on the instance. CPU % between two samples is the CPU time the domain spent over the
wall time that passed, per vCPU: 100 % is every vCPU busy all the time. Libvirt's test driver reports CPU time
too (it counts as if the guest never rested), so the figure is what the hypervisor says, on any driver."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from compute import hypervisor
from compute.execution import domain_name
from compute.models import Host, Instance, InstanceState

SAMPLE_FIELDS = ["cpu_time_ns", "cpu_sampled_at", "cpu_percent"]


def cpu_percent(
    *, before_ns: int, before_at: dt.datetime, now_ns: int, now_at: dt.datetime, vcpus: int
) -> float | None:
    """CPU use between two samples in percent of ``vcpus`` busy; None when the samples cannot be compared (no
    time passed, or the counter went back: the domain was restarted between them)."""
    wall_ns = (now_at - before_at).total_seconds() * 1e9
    if wall_ns <= 0 or now_ns < before_ns or vcpus <= 0:
        return None
    return round(100 * (now_ns - before_ns) / wall_ns / vcpus, 1)


def host_cpu_sample(*, host_id: int, now: dt.datetime | None = None) -> int:
    """On host ``host_id``'s worker: sample the CPU time of its running instances and store each one's CPU % since
    the previous sample. Instances no longer running lose their samples (their CPU % would be stale). Returns how
    many instances were sampled; a host that does not answer is left alone (reconciliation marks it down)."""
    host = Host.objects.filter(pk=host_id).first()
    if host is None:
        return 0
    try:
        listed = {cpu.name: cpu for cpu in hypervisor.domains_cpu_time(host.uri)}
    except hypervisor.HypervisorError:
        return 0
    now = now or timezone.now()
    sampled = []
    for instance in Instance.objects.filter(host=host, state=InstanceState.RUNNING).only("pk", "uuid", *SAMPLE_FIELDS):
        cpu = listed.get(domain_name(instance))
        if cpu is None:
            continue
        if instance.cpu_time_ns is not None and instance.cpu_sampled_at is not None:
            instance.cpu_percent = cpu_percent(
                before_ns=instance.cpu_time_ns,
                before_at=instance.cpu_sampled_at,
                now_ns=cpu.cpu_time_ns,
                now_at=now,
                vcpus=cpu.vcpus,
            )
        instance.cpu_time_ns, instance.cpu_sampled_at = cpu.cpu_time_ns, now
        sampled.append(instance)
    # Only the sample columns are written (never ``state``): a worker step moving the instance meanwhile wins.
    Instance.objects.bulk_update(sampled, SAMPLE_FIELDS)
    Instance.objects.filter(host=host).exclude(state=InstanceState.RUNNING).exclude(cpu_sampled_at=None).update(
        cpu_time_ns=None, cpu_sampled_at=None, cpu_percent=None
    )
    return len(sampled)
