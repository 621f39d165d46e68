"""Site policy over the API (DESIGN §6): an image's decision (public), and the staff-only admin endpoints
(the policy, its dry run, the site's endorsements)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound
from core.idempotency import idempotent
from marketplace import policy, selectors, services
from marketplace.api.entries import ERROR, EntryDetailSerializer, entry_created_response
from marketplace.models import SitePolicy
from marketplace.policy import PolicyRules, read_rules
from marketplace.policy import services as policy_services
from marketplace.policy.serializers import (
    DecisionSerializer,
    DryRunSerializer,
    PolicyInputSerializer,
    PolicyRulesSerializer,
    PolicySerializer,
)

# --- Decisions ---------------------------------------------------------------------------------------------


def decision_json(identifier: str, decision: policy.Decision) -> dict[str, Any]:
    return {"identifier": identifier, **decision.to_json()}


class ImagePolicyApi(APIView):
    """The site policy's decision on one image now, rule by rule. Anyone who can see the image may ask."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="marketplace_images_policy", responses={200: DecisionSerializer, 404: OpenApiResponse(ERROR)}
    )
    def get(self, request: Request, identifier: str) -> Response:
        image = selectors.image_get(identifier=identifier)
        return Response(decision_json(image.identifier, policy.evaluate(image)))


# --- The policy ----------------------------------------------------------------------------------------------


def policy_json(row: SitePolicy | None) -> dict[str, Any]:
    rules = PolicyRules.from_json(row.rules) if row is not None else PolicyRules()
    return {
        "id": row.pk if row else None,
        "created": serializers.DateTimeField().to_representation(row.created) if row else None,
        "created_by": row.created_by.get_username() if row and row.created_by else None,
        "note": row.note if row else "",
        **rules.to_json(),
    }


class AdminPolicyApi(APIView):
    """The active site policy (staff only). PUT replaces it: fields left out take their defaults."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(operation_id="admin_policy_retrieve", responses={200: PolicySerializer})
    def get(self, request: Request) -> Response:
        return Response(policy_json(selectors.policy_active()))

    @extend_schema(
        operation_id="admin_policy_update",
        request=PolicyInputSerializer,
        responses={
            200: PolicySerializer,
            400: OpenApiResponse(ERROR, description="`errors` maps each bad field to its problem."),
            409: OpenApiResponse(ERROR),
        },
    )
    def put(self, request: Request) -> Response:
        rules, note = read_rules(request.data)
        row, _changed = policy_services.policy_change(actor=request.user, rules=rules, note=note, source="api")
        return Response(policy_json(row))


class AdminPolicyDryRunApi(APIView):
    """What a proposed policy would change now: images newly denied or allowed compared with the active one.
    Changes nothing."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="admin_policy_dry_run",
        request=PolicyRulesSerializer,
        responses={200: DryRunSerializer, 400: OpenApiResponse(ERROR)},
    )
    def post(self, request: Request) -> Response:
        rules, _note = read_rules(request.data)
        active = selectors.policy_active()
        result = policy.dry_run(rules)
        return Response({**result.to_json(), "active_policy": active.pk if active else None})


# --- The site's endorsements ----------------------------------------------------------------------------------


class AdminImageEndorseApi(APIView):
    """Endorse an image with the site key: the server signs a new entry (built from the image's newest entry)
    and uploads it through the normal path. Also un-deprecates the site's earlier endorsement."""

    permission_classes = [permissions.IsAdminUser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SiteEndorseInput"

        valid_until = serializers.DateTimeField(
            required=False, allow_null=True, help_text="Expiry of the site's endorsement; none by default."
        )
        reason = serializers.CharField(
            required=False, allow_blank=True, max_length=2000, help_text="For the audit log."
        )

    @extend_schema(
        operation_id="admin_images_endorse",
        request=InputSerializer,
        responses={201: EntryDetailSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @idempotent
    def post(self, request: Request, identifier: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = selectors.image_get(identifier=identifier)
        entry = services.image_site_endorse(
            actor=request.user,
            image=image,
            valid_until=data.validated_data.get("valid_until"),
            reason=data.validated_data.get("reason", ""),
        )
        return entry_created_response(entry, request)


class AdminImageDeprecateApi(APIView):
    """Deprecate the site's endorsement of an image (``reason`` required): a newer site entry saying so."""

    permission_classes = [permissions.IsAdminUser]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "SiteDeprecateInput"

        reason = serializers.CharField(max_length=2000, help_text="Why; written into the signed entry.")

    @extend_schema(
        operation_id="admin_images_deprecate",
        request=InputSerializer,
        responses={201: EntryDetailSerializer, 400: ERROR, 404: ERROR, 409: ERROR},
    )
    @idempotent
    def post(self, request: Request, identifier: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        image = selectors.image_get(identifier=identifier)
        entry = services.image_site_deprecate(actor=request.user, image=image, reason=data.validated_data["reason"])
        return entry_created_response(entry, request)


SITE_KEY = inline_serializer(
    "MarketplaceSiteKey",
    {
        "fingerprint": serializers.CharField(),
        "uid": serializers.CharField(),
        "email": serializers.CharField(),
        "created": serializers.DateTimeField(),
        "armored": serializers.CharField(help_text="The public key, for other sites to trust."),
    },
)


class SiteKeyApi(APIView):
    """The site's public OpenPGP key, so that other sites can trust its endorsements. Anyone may read it."""

    permission_classes = [permissions.AllowAny]

    @extend_schema(operation_id="marketplace_site_key", responses={200: SITE_KEY, 404: ERROR})
    def get(self, request: Request) -> Response:
        key = selectors.site_key_get()
        if key is None:
            raise NotFound("This site has no key yet.", code="site-key-missing")
        return Response(
            {
                "fingerprint": key.fingerprint,
                "uid": key.uid,
                "email": key.email,
                "created": serializers.DateTimeField().to_representation(key.created),
                "armored": key.armored,
            }
        )
