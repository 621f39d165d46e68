"""The one translation of the gpg adapter's errors into the application errors that pages and the API render."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from core.errors import ApplicationError, Unavailable
from marketplace import signing


@contextmanager
def gpg_errors() -> Iterator[None]:
    """Run gpg work: a refusal becomes a 400 with the adapter's code, a gpg that could not run a 503
    (the adapter's words stay on the chained exception, for the logs)."""
    try:
        yield
    except signing.GpgUnavailable as exc:
        raise Unavailable(
            "The Marketplace could not run gpg; nothing was changed. Try again later.", code=exc.code
        ) from exc
    except signing.SigningRefused as exc:
        raise ApplicationError(exc.message, code=exc.code) from exc
