"""URLs of the compute app: REST endpoints (under /api/v1/) in ``api_urlpatterns``, portal pages in ``urlpatterns``
(mounted under /storage/ by the portal: the volume page with compute's attach and detach)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from compute import api, trust_api, views

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
