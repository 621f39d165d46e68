"""Portal forms of compute. They check the shape of what was typed; the services decide the rest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from compute.models import FirewallProtocol, NetworkKind

NETWORK_LABELS = {
    NetworkKind.PRIVATE: "private (reachable inside the site)",
    NetworkKind.LOCAL: "local (reachable from the site's networks)",
    NetworkKind.PUBLIC: "public (reachable from the internet; uses a public IP)",
}


class LaunchForm(forms.Form):
    """Request a VM: what :func:`compute.services.instance_request` takes, chosen among the user's own things."""

    name = forms.CharField(
        max_length=63, help_text="Becomes the VM's hostname: letters, digits and hyphens.", label="Name"
    )
    project = forms.TypedChoiceField(coerce=int, choices=(), label="Project")
    image = forms.CharField(max_length=27, label="Image", help_text="Choose an allowed image below.")
    instance_type = forms.ChoiceField(choices=(), label="Instance type")
    network = forms.ChoiceField(choices=(), label="Network")
    volatile_gib = forms.IntegerField(
        min_value=0, initial=0, label="Volatile disk (GiB)", help_text="Scratch space, destroyed with the VM."
    )
    volumes = forms.MultipleChoiceField(
        choices=(), required=False, label="Volumes", widget=forms.CheckboxSelectMultiple,
        help_text="Your available volumes, attached at boot.",
    )  # fmt: skip
    ssh_keys = forms.MultipleChoiceField(
        choices=(), required=False, label="SSH keys", widget=forms.CheckboxSelectMultiple
    )
    user_data = forms.CharField(
        required=False, strip=False, label="User data", widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Given to cloud-init (a #cloud-config document or a script).",
    )  # fmt: skip

    def __init__(
        self,
        *args: Any,
        projects: Iterable[tuple[int, str]],
        instance_types: Iterable[Any],
        networks: Iterable[str],
        volumes: Iterable[tuple[str, str]],
        ssh_keys: Iterable[tuple[str, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = list(projects)
        types = list(instance_types)
        self.fields["instance_type"].choices = [
            (t.name, f"{t.name} · {t.vcpus} vCPU, {t.ram_mib} MiB RAM") for t in types
        ]
        default = next((t.name for t in types if t.is_default), None)
        if default:
            self.fields["instance_type"].initial = default
        self.fields["network"].choices = [(kind, NETWORK_LABELS.get(kind, kind)) for kind in networks]
        # The site's limit is read per form (a setting tests and sites change), not fixed at import.
        most = settings.COMPUTE_VOLATILE_MAX_GIB
        self.fields["volatile_gib"].validators.append(MaxValueValidator(most))
        self.fields["volatile_gib"].widget.attrs["max"] = most
        self.fields["volumes"].choices = list(volumes)
        self.fields["ssh_keys"].choices = list(ssh_keys)
        if len(self.fields["ssh_keys"].choices) == 1:
            self.fields["ssh_keys"].initial = [self.fields["ssh_keys"].choices[0][0]]


class BulkActionForm(forms.Form):
    """Shut down or terminate several instances at once: their ids, checked on the dashboard."""

    ACTIONS = [("shutdown", "Shut down"), ("terminate", "Terminate")]
    MAX = 100

    action = forms.ChoiceField(choices=ACTIONS)
    instances = forms.MultipleChoiceField(choices=(), error_messages={"required": "Select at least one VM first."})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Ids are checked one by one against the user's instances by the view; here only their number.
        self.fields["instances"].valid_value = lambda value: bool(value) and len(value) <= 36  # type: ignore[method-assign]

    def clean_instances(self) -> list[str]:
        chosen = list(dict.fromkeys(self.cleaned_data["instances"]))
        if len(chosen) > self.MAX:
            raise forms.ValidationError(f"Select at most {self.MAX} VMs at once.")
        return chosen


class FirewallRuleForm(forms.Form):
    """A rule for a VM's firewall: what :func:`compute.firewalls.firewall_rule_add` takes. Only the shape is checked
    here; the service says which ports the site lets users open and whether the source is a network."""

    protocol = forms.ChoiceField(
        choices=[(value, value) for value in FirewallProtocol.values], initial=FirewallProtocol.TCP, label="Protocol"
    )
    port = forms.IntegerField(
        required=False,
        label="Port",
        help_text="None for icmp.",
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    source = forms.CharField(
        required=False, max_length=64, initial="0.0.0.0/0", label="From (IPv4 CIDR)",
        help_text="0.0.0.0/0 is anywhere.",
    )  # fmt: skip

    def clean_source(self) -> str:
        return self.cleaned_data["source"] or "0.0.0.0/0"
