"""Path converters shared by every app's URLs. Importing this module registers them (once per process).

``<id:name>`` takes what a database id can be: 1 to 18 digits, so that it always fits a signed 64-bit
column. A longer number matches no route and is answered 404, instead of overflowing the database driver.
"""

from __future__ import annotations

from django.urls import register_converter


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int | str) -> str:
        return str(int(value))


register_converter(IdConverter, "id")
