"""The accounts REST API (DESIGN §6): registrations, /me, projects and members, SSH keys, API tokens,
and the staff registration queue. Serializers validate and render; services write."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from knox.models import AuthToken
from rest_framework import exceptions, generics, permissions, serializers, status
from rest_framework.authentication import BasicAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.models import QUOTA_RESOURCES, ApiToken, Membership, Project, RegistrationRequest, SshKey
from accounts.quotas import quota_usage, quotas_usage
from core.errors import ApplicationError
from core.idempotency import idempotent

# --- shared output ----------------------------------------------------------------------------------


class ResourceUsageSerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    used = serializers.IntegerField()


QuotaUsageSerializer = inline_serializer(
    name="QuotaUsage", fields={resource: ResourceUsageSerializer() for resource in QUOTA_RESOURCES}
)


class ProjectOutputSerializer(serializers.ModelSerializer):
    personal = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()
    quotas = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "personal", "role", "quotas", "created"]

    def get_personal(self, project: Project) -> bool:
        return project.personal_owner_id is not None

    def get_role(self, project: Project) -> str | None:
        return selectors.project_role(actor=self.context["request"].user, project=project)

    @extend_schema_field(QuotaUsageSerializer)
    def get_quotas(self, project: Project) -> dict[str, dict[str, int]]:
        # Lists put every shown project's usage in the context (``quotas_usage``: a fixed number of queries).
        known = self.context.get("quota_usage", {})
        usage = known[project.pk] if project.pk in known else quota_usage(project=project)
        return {r: {"limit": u.limit, "used": u.used} for r, u in usage.items()}


class UserOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email", "first_name", "last_name", "is_staff"]


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


# --- registration (anonymous) -----------------------------------------------------------------------


class RegistrationCreateApi(APIView):
    """Ask for an account. Anonymous; staff approve or reject the request. Rate-limited per address."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "registration"

    class RegistrationInputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=20, trim_whitespace=False)
        email = serializers.EmailField(max_length=254)
        first_name = serializers.CharField(max_length=150)
        last_name = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=256, trim_whitespace=False, style={"input_type": "password"})
        dn = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
        message = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")
        accept_terms = serializers.BooleanField()

    class RegistrationCreatedSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()

    @extend_schema(request=RegistrationInputSerializer, responses={201: RegistrationCreatedSerializer}, auth=[])
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.RegistrationInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        registration = services.registration_submit(data=services.RegistrationInput(**data.validated_data))
        return Response({"id": registration.pk, "status": registration.status}, status=status.HTTP_201_CREATED)


class RegistrationConfirmationResendApi(APIView):
    """Mail the link that confirms a registration's e-mail address again. The answer is the same whether
    or not a request waits for the address. Rate-limited per client address with the registrations."""

    permission_classes = [permissions.AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "registration"

    class ResendInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)

    @extend_schema(request=ResendInputSerializer, responses={202: DetailSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.ResendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.registration_confirmation_resend(email=data.validated_data["email"])
        return Response({"detail": services.CONFIRMATION_RESEND_ANSWER}, status=status.HTTP_202_ACCEPTED)


# --- me ---------------------------------------------------------------------------------------------


class MeApi(APIView):
    """The signed-in user, their projects with role, quotas and current usage."""

    class MeSerializer(serializers.Serializer):
        user = UserOutputSerializer()
        projects = ProjectOutputSerializer(many=True)

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        projects = list(selectors.project_list(actor=request.user))
        context = {"request": request, "quota_usage": quotas_usage(projects=projects)}
        body = self.MeSerializer({"user": request.user, "projects": projects}, context=context)
        return Response(body.data)


class MeEmailApi(APIView):
    """Change your e-mail address: a confirmation link goes to the new address, and the address changes
    only once it is confirmed (the old address is then told). 409 ``email-taken`` when the address
    belongs to someone else."""

    class EmailInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)

    @extend_schema(request=EmailInputSerializer, responses={202: DetailSerializer})
    def post(self, request: Request) -> Response:
        data = self.EmailInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        new = services.user_email_change_request(actor=request.user, email=data.validated_data["email"])
        return Response(
            {"detail": f"We sent a confirmation link to {new}; your address changes once you open it."},
            status=status.HTTP_202_ACCEPTED,
        )


# --- projects and members ---------------------------------------------------------------------------


class ProjectListApi(generics.ListAPIView):
    """Projects you are a member of. Site administrators create shared projects (each has its own
    quota) and name their first manager."""

    serializer_class = ProjectOutputSerializer
    queryset = Project.objects.none()  # for the schema; requests use get_queryset()

    class ProjectInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        description = serializers.CharField(required=False, allow_blank=True, default="")
        manager = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.filter(is_active=True))

    def get_queryset(self) -> QuerySet[Project]:
        return selectors.project_list(actor=self.request.user)

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("many") and args:  # the page being listed: count its usage once
            kwargs.setdefault("context", self.get_serializer_context())["quota_usage"] = quotas_usage(
                projects=list(args[0])
            )
        return super().get_serializer(*args, **kwargs)

    @extend_schema(request=ProjectInputSerializer, responses={201: ProjectOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.ProjectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = services.project_create(actor=request.user, **data.validated_data)
        return Response(
            ProjectOutputSerializer(project, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class ProjectDetailApi(APIView):
    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request: Request, project_id: int) -> Response:
        project = selectors.access_project(actor=request.user, project_id=project_id)
        return Response(ProjectOutputSerializer(project, context={"request": request}).data)


class MemberOutputSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(source="user.id")
    username = serializers.CharField(source="user.username")
    full_name = serializers.CharField(source="user.get_full_name")

    class Meta:
        model = Membership
        fields = ["user_id", "username", "full_name", "role", "created"]


class RoleInputSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class MemberListApi(generics.ListAPIView):
    """Members of a project (any member may look); managers add members with a role."""

    serializer_class = MemberOutputSerializer
    queryset = Membership.objects.none()  # for the schema; requests use get_queryset()

    class MemberInputSerializer(serializers.Serializer):
        username = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.all())
        role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)

    def get_queryset(self) -> QuerySet[Membership]:
        project = selectors.access_project(actor=self.request.user, project_id=self.kwargs["project_id"])
        return selectors.membership_list(project=project)

    @extend_schema(request=MemberInputSerializer, responses={201: MemberOutputSerializer})
    @idempotent
    def post(self, request: Request, project_id: int) -> Response:
        project = selectors.access_project(actor=request.user, project_id=project_id, manage=True)
        data = self.MemberInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.project_member_add(
            actor=request.user, project=project, user=data.validated_data["username"], role=data.validated_data["role"]
        )
        return Response(MemberOutputSerializer(membership).data, status=status.HTTP_201_CREATED)


class MemberDetailApi(APIView):
    """One member: managers change the role or remove; a member may remove themself (leave)."""

    @extend_schema(responses=MemberOutputSerializer)
    def get(self, request: Request, project_id: int, user_id: int) -> Response:
        project = selectors.access_project(actor=request.user, project_id=project_id)
        return Response(MemberOutputSerializer(selectors.access_membership(project=project, user_id=user_id)).data)

    @extend_schema(request=RoleInputSerializer, responses=MemberOutputSerializer)
    def patch(self, request: Request, project_id: int, user_id: int) -> Response:
        project = selectors.access_project(actor=request.user, project_id=project_id, manage=True)
        membership = selectors.access_membership(project=project, user_id=user_id)
        data = RoleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.project_member_set_role(
            actor=request.user, membership=membership, role=data.validated_data["role"]
        )
        return Response(MemberOutputSerializer(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, project_id: int, user_id: int) -> Response:
        leaving = str(user_id) == str(request.user.pk)
        project = selectors.access_project(actor=request.user, project_id=project_id, manage=not leaving)
        membership = selectors.access_membership(project=project, user_id=user_id)
        services.project_member_remove(actor=request.user, membership=membership)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- SSH keys ---------------------------------------------------------------------------------------


class SshKeyOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = SshKey
        fields = ["id", "name", "public_key", "key_type", "bits", "fingerprint", "created"]


class SshKeyListApi(generics.ListAPIView):
    """Your SSH public keys; added keys are parsed (ed25519, ECDSA, RSA ≥ 2048 bits)."""

    serializer_class = SshKeyOutputSerializer
    queryset = SshKey.objects.none()  # for the schema; requests use get_queryset()

    class SshKeyInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        public_key = serializers.CharField(max_length=16384)

    def get_queryset(self) -> QuerySet[SshKey]:
        return selectors.ssh_key_list(actor=self.request.user)

    @extend_schema(request=SshKeyInputSerializer, responses={201: SshKeyOutputSerializer})
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.SshKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.ssh_key_add(actor=request.user, **data.validated_data)
        return Response(SshKeyOutputSerializer(key).data, status=status.HTTP_201_CREATED)


class SshKeyDetailApi(APIView):
    @extend_schema(responses=SshKeyOutputSerializer)
    def get(self, request: Request, key_id: int) -> Response:
        return Response(SshKeyOutputSerializer(selectors.access_ssh_key(actor=request.user, key_id=key_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, key_id: int) -> Response:
        services.ssh_key_delete(actor=request.user, key=selectors.access_ssh_key(actor=request.user, key_id=key_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API tokens -------------------------------------------------------------------------------------


class ApiTokenOutputSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(source="token.token_key", help_text="the token's first characters")
    expires = serializers.DateTimeField(source="token.expiry", allow_null=True)
    expired = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created", "expires", "expired"]

    def get_expired(self, token: ApiToken) -> bool:
        return token.token.expiry is not None and token.token.expiry <= timezone.now()


class PasswordAuthentication(BasicAuthentication):
    """Username and password (HTTP Basic), accepted for one call only: POST to create an API token (what
    ``alto login`` does). It goes through ``authenticate()`` with the client's request, so the login lockout
    (django-axes: LOGIN_FAILURE_LIMIT failures per username and client address) counts and refuses these
    attempts exactly as it does the login page's."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        if request.method != "POST":
            return None
        return super().authenticate(request)

    def authenticate_credentials(self, userid: str, password: str, request: Any = None) -> tuple[User, None]:
        http_request = getattr(request, "_request", request)
        user = authenticate(request=http_request, username=userid, password=password)
        if user is None or not user.is_active:
            # When this failure locked the combination out, AxesMiddleware answers 429 instead.
            raise exceptions.AuthenticationFailed("Wrong username or password.", code="login-failed")
        return user, None


class PasswordAuthenticationScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ``PasswordAuthentication``: HTTP Basic, for creating a token only."""

    target_class = PasswordAuthentication
    name = "passwordAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "basic",
            "description": "Username and password, accepted only by POST /api/v1/accounts/tokens/ (what alto login "
            "does), under the login page's lockout.",
        }


class ApiTokenListApi(generics.ListAPIView):
    """Your API tokens (``Authorization: Token <token>``). A new token is shown in the creation
    response only; it is kept hashed. Creating one also accepts a username and password (HTTP Basic), under
    the login page's lockout: that is how a command-line client logs in."""

    authentication_classes = [*api_settings.DEFAULT_AUTHENTICATION_CLASSES, PasswordAuthentication]
    serializer_class = ApiTokenOutputSerializer
    queryset = ApiToken.objects.none()  # for the schema; requests use get_queryset()

    class ApiTokenInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        expires_in_days = serializers.IntegerField(
            required=False,
            allow_null=True,
            min_value=1,
            help_text="days until the token expires; null: never. Left out: never, or, when you call with a "
            "token that expires, that token's expiry (a token may not outlive the one that makes it).",
        )

    class ApiTokenCreatedSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        name = serializers.CharField()
        token = serializers.CharField()
        expires = serializers.DateTimeField(allow_null=True)

    def get_queryset(self) -> QuerySet[ApiToken]:
        return selectors.api_token_list(actor=self.request.user)

    # Not idempotent on purpose: replaying would mean keeping the clear token to send it again.
    @extend_schema(request=ApiTokenInputSerializer, responses={201: ApiTokenCreatedSerializer})
    def post(self, request: Request) -> Response:
        data = self.ApiTokenInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        days = data.validated_data.get("expires_in_days")
        credential = request.auth if isinstance(request.auth, AuthToken) else None
        record, secret = services.api_token_create(
            actor=request.user,
            name=data.validated_data["name"],
            expires_in_days=days,
            never_expires="expires_in_days" in data.validated_data and days is None,
            credential_expiry=credential.expiry if credential is not None else None,
        )
        body = {"id": record.pk, "name": record.name, "token": secret, "expires": record.token.expiry}
        response = Response(self.ApiTokenCreatedSerializer(body).data, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class ApiTokenDetailApi(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        token = selectors.access_api_token(actor=request.user, token_id=token_id)
        services.api_token_revoke(actor=request.user, token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- staff: the registration queue ------------------------------------------------------------------


class RegistrationOutputSerializer(serializers.ModelSerializer):
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    user_id = serializers.IntegerField(allow_null=True, read_only=True)

    class Meta:
        model = RegistrationRequest
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "dn",
            "message",
            "status",
            "email_confirmed",
            "created",
            "decided",
            "decided_by",
            "reason",
            "user_id",
        ]


class AdminRegistrationListApi(generics.ListAPIView):
    """Registration requests (staff only); ``status`` filters (pending, approved, rejected)."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = RegistrationOutputSerializer
    queryset = RegistrationRequest.objects.none()  # for the schema; requests use get_queryset()

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=RegistrationRequest.Status.values, required=False)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        wanted = request.query_params.get("status") or None
        if wanted is not None and wanted not in RegistrationRequest.Status.values:
            raise ApplicationError(
                f"status: must be one of {', '.join(RegistrationRequest.Status.values)}", code="invalid"
            )
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[RegistrationRequest]:
        return selectors.registration_list(actor=self.request.user, status=self.request.query_params.get("status"))


class AdminRegistrationDetailApi(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(responses=RegistrationOutputSerializer)
    def get(self, request: Request, registration_id: int) -> Response:
        registration = selectors.access_registration(actor=request.user, registration_id=registration_id)
        return Response(RegistrationOutputSerializer(registration).data)


class AdminRegistrationApproveApi(APIView):
    """Approve: creates the account (in LDAP when configured) and the personal project. 409 with
    ``email-unconfirmed`` before the applicant has confirmed the address, ``email-taken`` when the
    address has been given to someone else since; 503 with ``directory-unavailable`` when the directory
    does not answer. The request then stays pending."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=None, responses=RegistrationOutputSerializer)
    def post(self, request: Request, registration_id: int) -> Response:
        registration = selectors.access_registration(actor=request.user, registration_id=registration_id)
        decided = services.registration_approve(actor=request.user, registration=registration)
        return Response(RegistrationOutputSerializer(decided).data)


class AdminRegistrationRejectApi(APIView):
    permission_classes = [permissions.IsAdminUser]

    class RegistrationRejectInputSerializer(serializers.Serializer):
        reason = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")

    @extend_schema(request=RegistrationRejectInputSerializer, responses=RegistrationOutputSerializer)
    def post(self, request: Request, registration_id: int) -> Response:
        registration = selectors.access_registration(actor=request.user, registration_id=registration_id)
        data = self.RegistrationRejectInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decided = services.registration_reject(
            actor=request.user, registration=registration, reason=data.validated_data["reason"]
        )
        return Response(RegistrationOutputSerializer(decided).data)
