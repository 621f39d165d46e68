"""Marketplace URLs: portal pages in ``urlpatterns``, REST endpoints (under /api/v1/) in ``api_urlpatterns``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []

api_urlpatterns: list[URLPattern | URLResolver] = []
