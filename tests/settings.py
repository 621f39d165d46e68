"""Settings for the test suite: the project's own, with a var/ of its own and fast password hashing."""

from __future__ import annotations

import os
from pathlib import Path

# Before the project's settings are read: tests keep their database, broker and keyrings apart
# from the ones `make run` uses.
os.environ.setdefault("ALTO_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def _forget_content_types(**_: object) -> None:
    from django.contrib.contenttypes.models import ContentType

    ContentType.objects.clear_cache()


# A worker process started by the tests outlives the flushes between transactional tests, which give the content
# types new ids; the audit log names objects by content type, so the worker forgets the old ids before each task.
from celery.signals import task_prerun  # noqa: E402

task_prerun.connect(_forget_content_types, weak=False)
