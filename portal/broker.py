"""The embedded broker: kombu's filesystem transport, with messages written atomically.

kombu's own ``_put`` creates the message file under its final name and only then locks and writes it, while
``_get`` moves files away without looking at locks: a worker polling at that moment takes an empty file and dies
on it ("Unrecoverable error: JSONDecodeError", seen under ``make run`` with a few VMs polling). Here a message is
written under a name the readers skip (no ``.msg`` suffix) and renamed into place, which is atomic on one
filesystem, so a reader sees a whole message or none. ``portal.celery`` puts this class behind ``filesystem://``.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
