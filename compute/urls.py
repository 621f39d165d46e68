"""URLs of the compute app: REST endpoints (under /api/v1/) in ``api_urlpatterns``, the VM pages in
``instance_urlpatterns`` (under /instances/), and in ``urlpatterns`` the volume page with compute's attach and detach
(mounted under /storage/ by the portal)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from compute import api, console_views, trust_api, views
from core import converters  # noqa: F401 - registers the <id:…> path converter

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("compute/instance-types/", api.InstanceTypeListApi.as_view(), name="api-compute-instance-types"),
    path("compute/capacity/", api.CapacityApi.as_view(), name="api-compute-capacity"),
    path("compute/instances/", api.InstanceListApi.as_view(), name="api-compute-instances"),
    path("compute/instances/<str:instance_id>/", api.InstanceDetailApi.as_view(), name="api-compute-instance"),
    path(
        "compute/instances/<str:instance_id>/console/",
        api.InstanceConsoleApi.as_view(),
        name="api-compute-instance-console",
    ),
    path(
        "compute/instances/<str:instance_id>/firewall/",
        api.InstanceFirewallApi.as_view(),
        name="api-compute-instance-firewall",
    ),
    path(
        "compute/instances/<str:instance_id>/firewall/<str:rule_id>/",
        api.InstanceFirewallRuleApi.as_view(),
        name="api-compute-instance-firewall-rule",
    ),
    *[
        path(
            f"compute/instances/<str:instance_id>/{action}/",
            api.InstanceActionApi.as_view(action=action),
            name=f"api-compute-instance-{action}",
        )
        for action in api.InstanceActionApi.ACTIONS
    ],
    *[
        path(
            f"compute/instances/<str:instance_id>/{action}/",
            api.InstanceVolumeApi.as_view(action=action),
            name=f"api-compute-instance-{action}",
        )
        for action in api.InstanceVolumeApi.ACTIONS
    ],
    path("admin/instance-types/", api.InstanceTypeAdminListApi.as_view(), name="api-admin-instance-types"),
    path("admin/instance-types/<str:name>/", api.InstanceTypeAdminDetailApi.as_view(), name="api-admin-instance-type"),
    path("admin/hosts/", api.HostListApi.as_view(), name="api-admin-hosts"),
    path("admin/networks/", api.NetworkListApi.as_view(), name="api-admin-networks"),
    path(
        "admin/images/<str:identifier>/instances/",
        trust_api.AdminImageUsesApi.as_view(),
        name="api-admin-image-instances",
    ),
    path("compute/notices/", trust_api.TrustNoticeListApi.as_view(), name="api-compute-notices"),
    path(
        "compute/notices/<id:notice_id>/dismiss/",
        trust_api.TrustNoticeDismissApi.as_view(),
        name="api-compute-notice-dismiss",
    ),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("volumes/<str:volume_id>/", views.volume_show, name="compute-volume"),
    path("volumes/<str:volume_id>/attach/", views.volume_action, {"action": "attach"}, name="compute-volume-attach"),
    path("volumes/<str:volume_id>/detach/", views.volume_action, {"action": "detach"}, name="compute-volume-detach"),
]

instance_urlpatterns: list[URLPattern | URLResolver] = [
    path("new/", views.instance_launch, name="instance-launch"),
    path("new/preview/", views.instance_launch_preview, name="instance-launch-preview"),
    path("actions/", views.instance_bulk_action, name="instance-bulk-action"),
    path("<str:instance_id>/", views.instance_show, name="instance"),
    path("<str:instance_id>/status/", views.instance_status, name="instance-status"),
    path("<str:instance_id>/console/", views.instance_console_tail, name="instance-console"),
    path("<str:instance_id>/firewall/", views.instance_firewall_add, name="instance-firewall-add"),
    path(
        "<str:instance_id>/firewall/<str:rule_id>/delete/",
        views.instance_firewall_delete,
        name="instance-firewall-delete",
    ),
    *[
        path(f"<str:instance_id>/{action}/", views.instance_action, {"action": action}, name=f"instance-{action}")
        for action in views.ACTIONS
    ],
    *[
        path(f"<str:instance_id>/{action}/", views.instance_volume, {"action": action}, name=f"instance-{action}")
        for action in ("attach", "detach")
    ],
]

# The admin console's compute pages, mounted under /console/ by the portal.
console_urlpatterns: list[URLPattern | URLResolver] = [
    path("hosts/", console_views.console_hosts, name="console-hosts"),
    *[
        path(
            f"hosts/<id:host_id>/maintenance/{action}/",
            console_views.console_host_maintenance,
            {"action": action},
            name=f"console-host-maintenance-{action}",
        )
        for action in ("set", "clear")
    ],
    path("networks/", console_views.console_networks, name="console-networks"),
    path("networks/<id:network_id>/", console_views.console_network, name="console-network"),
    path("instance-types/", console_views.console_instance_types, name="console-instance-types"),
    path("instance-types/new/", console_views.console_instance_type_create, name="console-instance-type-create"),
    path("instance-types/<str:name>/", console_views.console_instance_type_update, name="console-instance-type-update"),
    path(
        "instance-types/<str:name>/retire/",
        console_views.console_instance_type_retire,
        name="console-instance-type-retire",
    ),
    path("instances/", console_views.console_instances, name="console-instances"),
    path("volumes/", console_views.console_volumes, name="console-volumes"),
]
