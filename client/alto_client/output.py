"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=False)
errors = Console(stderr=True, highlight=False)
# Whether this run prints JSON (--json): errors are reported in the same form. Set by the command's context.
json_mode = False


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "-"
    return str(value)


def _cell(value: Any) -> Text:
    # Text, not markup: values come from the server and may hold brackets.
    return Text(_plain(value))


def table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
    """``columns``: (key, heading) pairs."""
    shown = Table(title=title, show_lines=False, header_style="bold")
    for _, heading in columns:
        shown.add_column(heading, overflow="fold")
    count = 0
    for row in rows:
        shown.add_row(*(_cell(row.get(key)) for key, _ in columns))
        count += 1
    if count:
        console.print(shown)
    else:
        console.print(Text(f"No {_noun(title) if title else 'results'}."))


def _noun(title: str) -> str:
    """``title`` inside a sentence: "Images" → "images"; names like "VMs", "OpenPGP keys" stay as they are."""
    first = title.split()[0]
    return title if any(c.isupper() for c in first[1:]) else title[0].lower() + title[1:]


def fields(data: Mapping[str, Any], names: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
    """One object as a two-column table."""
    shown = Table(title=title, show_header=False, box=None, padding=(0, 2))
    shown.add_column(style="bold")
    shown.add_column(overflow="fold")
    for key, label in names:
        shown.add_row(label, _cell(data.get(key)))
    console.print(shown)


def say(message: str) -> None:
    console.print(Text(message))


def show_error(error: Any) -> None:
    """The error on standard error: words, or with --json one JSON object (``error``, ``code``, ``status``,
    ``exit_code``, ``lines``) that a script can read."""
    if json_mode:
        body = {
            "error": error.message,
            "code": getattr(error, "code", "") or "",
            "status": getattr(error, "status", None),
            "exit_code": error.exit_code,
            "lines": list(error.lines),
        }
        sys.stderr.write(json.dumps(body, sort_keys=True) + "\n")
        return
    errors.print(Text.assemble(("error: ", "bold red"), error.message))
    for line in error.lines:
        errors.print(Text(f"  - {line}"))
