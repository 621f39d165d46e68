"""The tgt adapter: the only module that runs ``tgtadm`` (the userspace iSCSI target's control tool).

One target per volume, named by its IQN, with the volume's file as LUN 1. tgtd keeps its targets in memory
only: after a restart it has none, and ``storage.reconcile`` puts them back from the database through
:func:`target_ensure`. Every call has a timeout; a tgtd that does not answer is :class:`TgtTransient`, a refusal
:class:`TgtPermanent`. Target ids (``tid``) are tgtd's own business: they are looked up by IQN each time, and a new
target takes the lowest free one (two workers racing for it: the loser tries the next)."""

from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AdapterError, PermanentError, TransientError

TGTADM = "tgtadm"
TIMEOUT_SECONDS = 30
LUN = 1
# tgtadm's exit codes (tgtadm_err): 22 "this target already exists", 107 no tgtd to talk to.
EXISTS = 22
NOT_CONNECTED = 107
_TIDS_TRIES = 20


class TgtError(AdapterError):
    """tgtadm failed; the message is what it said."""


class TgtTransient(TgtError, TransientError):
    """tgtd did not answer (not running, restarting) or tgtadm did not finish in time."""


class TgtPermanent(TgtError, PermanentError):
    """tgtd refused the request."""


@dataclass(frozen=True)
class Lun:
    number: int
    size_bytes: int  # as tgtd shows it (decimal MB, rounded): a check, not a measure
    path: str
    read_only: bool


@dataclass(frozen=True)
class Target:
    tid: int
    iqn: str
    luns: dict[int, Lun] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    initiators: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tgt:
    """How to reach one tgtd: its control port (``tgtadm -C``; 0: tgt's default)."""

    control_port: int = 0

    def _run(self, *args: str) -> str:
        command = [TGTADM, "--lld", "iscsi", *args]
        if self.control_port:
            command[1:1] = ["-C", str(self.control_port)]
        try:
            done = subprocess.run(  # noqa: S603 - fixed program; arguments are ids, names and paths we made
                command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise TgtTransient(f"tgtadm {' '.join(args[:4])} did not finish in {TIMEOUT_SECONDS} s") from None
        except OSError as exc:
            raise TgtTransient(f"tgtadm could not be started: {exc}") from None
        if done.returncode == 0:
            return done.stdout
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        if done.returncode == NOT_CONNECTED or "tgt daemon" in said:
            raise TgtTransient(f"tgtd does not answer: {said}")
        error = TgtPermanent(f"tgtadm {' '.join(args[:4])} failed: {said}")
        error.returncode = done.returncode  # type: ignore[attr-defined]
        raise error

    # --- reading ----------------------------------------------------------------------------------------

    def targets(self) -> dict[str, Target]:
        """Every target tgtd has now, by IQN."""
        return {t.iqn: t for t in _parse_show(self._run("--mode", "target", "--op", "show"))}

    def target(self, iqn: str) -> Target | None:
        return self.targets().get(iqn)

    # --- changing ---------------------------------------------------------------------------------------

    def target_ensure(
        self,
        *,
        iqn: str,
        backing: Path,
        read_only: bool,
        initiators: tuple[str, ...] = ("ALL",),
        chap_username: str = "",
        chap_secret: str = "",
    ) -> tuple[Target, bool]:
        """The target ``iqn`` exporting ``backing`` as LUN 1 to ``initiators``, with the CHAP account when given;
        made (or completed) when missing. Returns it and whether anything had to be made. Idempotent: one
        ``show`` when the target is complete, one per step otherwise."""
        targets = self.targets()
        found = targets.get(iqn)
        made = found is None
        if found is None:
            found = self._target_new(iqn, taken={t.tid for t in targets.values()})
        tid = str(found.tid)
        lun = found.luns.get(LUN)
        if lun is not None and lun.path != str(backing):
            raise TgtPermanent(f"target {iqn} exports {lun.path}, not {backing}")
        if lun is None:
            self._run(
                "--mode", "logicalunit", "--op", "new", "--tid", tid, "--lun", str(LUN), "--backing-store", str(backing)
            )
            made = True
        if read_only and (lun is None or not lun.read_only):
            self._run(
                "--mode", "logicalunit", "--op", "update", "--tid", tid, "--lun", str(LUN), "--params", "readonly=1"
            )
            made = True
        accounts = found.accounts
        if chap_username and chap_username not in accounts:
            try:
                self._run("--mode", "account", "--op", "new", "--user", chap_username, "--password", chap_secret)
            except TgtPermanent as exc:
                if getattr(exc, "returncode", None) != EXISTS:
                    raise
            self._run("--mode", "account", "--op", "bind", "--tid", tid, "--user", chap_username)
            accounts = (*accounts, chap_username)
            made = True
        bound = found.initiators
        for address in initiators:
            if address not in bound:
                self._run("--mode", "target", "--op", "bind", "--tid", tid, "--initiator-address", address)
                bound = (*bound, address)
                made = True
        if not made:
            return found, False
        size = lun.size_bytes if lun is not None else backing.stat().st_size
        exported = Lun(
            number=LUN, size_bytes=size, path=str(backing), read_only=read_only or bool(lun and lun.read_only)
        )
        return Target(
            tid=found.tid, iqn=iqn, luns={**found.luns, LUN: exported}, accounts=accounts, initiators=bound
        ), True

    def _target_new(self, iqn: str, *, taken: set[int]) -> Target:
        for _try in range(_TIDS_TRIES):
            tid = next(n for n in range(1, len(taken) + 2) if n not in taken)
            try:
                self._run("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn)
            except TgtPermanent as exc:
                if getattr(exc, "returncode", None) != EXISTS:
                    raise
                targets = self.targets()
                if iqn in targets:  # another worker made this very target meanwhile
                    return targets[iqn]
                taken = {t.tid for t in targets.values()} | {tid}  # another target took that tid: the next one
                continue
            return Target(tid=tid, iqn=iqn)
        raise TgtTransient(f"no free target id for {iqn} after {_TIDS_TRIES} tries")

    def target_remove(self, *, iqn: str, chap_username: str = "") -> bool:
        """Remove the target ``iqn`` (even with initiators logged in: the volume is being deleted) and its CHAP
        account. Returns whether there was one. Idempotent."""
        found = self.target(iqn)
        if found is not None:
            self._run("--mode", "target", "--op", "delete", "--force", "--tid", str(found.tid))
        if chap_username:
            with contextlib.suppress(TgtPermanent):  # no such account: already removed
                self._run("--mode", "account", "--op", "delete", "--user", chap_username)
        return found is not None


# --- `tgtadm --op show` ------------------------------------------------------------------------------------

_TARGET = re.compile(r"^Target (\d+): (\S+)$")
_SIZE = re.compile(r"^Size: (\d+) MB")


def _parse_show(text: str) -> list[Target]:
    """Targets from ``tgtadm --mode target --op show`` (indented sections: LUN information, Account
    information, ACL information)."""
    targets: list[Target] = []
    current: dict | None = None
    section = ""
    lun: dict | None = None

    def close_lun() -> None:
        nonlocal lun
        if current is not None and lun is not None and "number" in lun:
            current["luns"][lun["number"]] = Lun(
                number=lun["number"],
                size_bytes=lun.get("size", 0),
                path=lun.get("path", ""),
                read_only=lun.get("read_only", False),
            )
        lun = None

    def close_target() -> None:
        close_lun()
        if current is not None:
            targets.append(
                Target(
                    tid=current["tid"],
                    iqn=current["iqn"],
                    luns=current["luns"],
                    accounts=tuple(current["accounts"]),
                    initiators=tuple(current["initiators"]),
                )
            )

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _TARGET.match(raw)
        if match:
            close_target()
            current = {"tid": int(match[1]), "iqn": match[2], "luns": {}, "accounts": [], "initiators": []}
            section = ""
            continue
        if current is None:
            continue
        if line.endswith(" information:"):
            close_lun()
            section = line
            continue
        if section == "LUN information:":
            if line.startswith("LUN: "):
                close_lun()
                lun = {"number": int(line.split(":", 1)[1])}
            elif lun is not None:
                key, _, value = line.partition(":")
                value = value.strip()
                if key == "Size" and (size := _SIZE.match(line)):
                    lun["size"] = int(size[1]) * 1000 * 1000
                elif key == "Backing store path":
                    lun["path"] = "" if value == "None" else value
                elif key == "Readonly":
                    lun["read_only"] = value == "Yes"
        elif section == "Account information:":
            current["accounts"].append(line.split()[0])
        elif section == "ACL information:":
            current["initiators"].append(line)
    close_target()
    return targets
