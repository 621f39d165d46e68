"""Where an image may be downloaded from (``slterms:location``): the shared rule of ``alto_metadata``, with this
site's ``file:`` directories (``MARKETPLACE_FILE_LOCATION_DIRS``) as the default."""

from __future__ import annotations

from collections.abc import Iterable

import alto_metadata
from alto_metadata import WEB_SCHEMES, location_problem
from django.conf import settings


def allowed_file_dirs(dirs: Iterable[str] | None = None) -> tuple[str, ...]:
    """``dirs``, or when None the setting ``MARKETPLACE_FILE_LOCATION_DIRS``, as normalised absolute paths."""
    if dirs is None:
        dirs = getattr(settings, "MARKETPLACE_FILE_LOCATION_DIRS", ())
    return alto_metadata.allowed_file_dirs(dirs)


__all__ = ["WEB_SCHEMES", "allowed_file_dirs", "location_problem"]
