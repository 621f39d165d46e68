"""REST API (DESIGN §6): the account's OpenPGP keys, which sign its endorsements: list, register, revoke."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.idempotency import idempotent
from marketplace import selectors, services
from marketplace.api.entries import ERROR
from marketplace.models import PgpKey


class PgpKeySerializer(serializers.ModelSerializer):
    revoked = serializers.SerializerMethodField()
    endorsing_uids = serializers.SerializerMethodField(
        help_text="The user IDs that may endorse: those carrying the account's e-mail. The other `uids` are "
        "not usable for endorsing (a user ID with someone else's e-mail gives no right to endorse as them)."
    )

    class Meta:
        model = PgpKey
        fields = [
            "fingerprint",
            "uids",
            "endorsing_uids",
            "emails",
            "created",
            "expires",
            "registered",
            "revoked",
            "revoked_at",
        ]

    def get_revoked(self, key: PgpKey) -> bool:
        return key.revoked_at is not None

    def get_endorsing_uids(self, key: PgpKey) -> list[str]:
        return selectors.pgp_key_endorsing_uids(key)


class PgpKeyListApi(generics.ListAPIView):
    """Your registered OpenPGP keys; POST registers one (its user IDs must include your e-mail)."""

    permission_classes = [permissions.IsAuthenticated]
    serializer_class = PgpKeySerializer

    class InputSerializer(serializers.Serializer):
        armored = serializers.CharField(max_length=200_000, trim_whitespace=False)

    def get_queryset(self) -> QuerySet[PgpKey]:
        return selectors.pgp_key_list(actor=self.request.user)

    @extend_schema(
        operation_id="accounts_pgp_keys_create",
        request=InputSerializer,
        responses={201: PgpKeySerializer, 400: ERROR, 409: ERROR},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.pgp_key_register(actor=request.user, armored=data.validated_data["armored"])
        return Response(PgpKeySerializer(key).data, status=status.HTTP_201_CREATED)


class PgpKeyRevokeApi(APIView):
    """Revoke a key (its owner or staff): entries it signed stop counting as endorsements from now."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        operation_id="accounts_pgp_keys_revoke", request=None, responses={200: PgpKeySerializer, 404: ERROR, 409: ERROR}
    )
    def post(self, request: Request, fingerprint: str) -> Response:
        key = services.pgp_key_revoke(actor=request.user, fingerprint=fingerprint)
        return Response(PgpKeySerializer(key).data)
