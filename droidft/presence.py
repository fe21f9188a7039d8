"""Who is connected to the dashboard, and which run each visitor is watching.

Streamlit gives each browser tab a session id and (over a LAN) the client's address
(`st.context.ip_address`), but no public list of open sessions. So every open page
reports itself here every few seconds (a small `st.fragment` does it) and a session
that stops reporting is gone after `TIMEOUT` seconds. One `Presence` lives per dashboard
server process (the pages keep it in `st.cache_resource`); it is memory only and never
written to disk or the store: addresses are not kept once a visitor leaves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

TIMEOUT = 30.0  # seconds without a report before a session counts as gone


@dataclass
class Visitor:
    session: str
    role: str | None
    address: str | None  # None: this machine (localhost)
    page: str = ""
    run_id: str | None = None
    since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    @property
    def who(self) -> str:
        where = self.address or "this machine"
        return f"{self.role or 'not signed in'} · {where}"

    def label(self, show_address: bool) -> str:
        """`who` for the owner; only the role for viewers, who do not see addresses."""
        return self.who if show_address else (self.role or "visitor")


class Presence:
    """A thread-safe table of the sessions that reported within `timeout` seconds."""

    def __init__(self, timeout: float = TIMEOUT):
        self.timeout = timeout
        self._lock = threading.Lock()
        self._visitors: dict[str, Visitor] = {}

    def report(self, session: str, *, role: str | None, address: str | None,
               page: str | None = None, run_id: str | None = None, now: float | None = None) -> None:
        """Record that `session` is open (on `page`, watching `run_id` if given)."""
        now = time.time() if now is None else now
        with self._lock:
            visitor = self._visitors.get(session)
            if visitor is None:
                visitor = self._visitors[session] = Visitor(session, role, address, since=now)
            visitor.role, visitor.address, visitor.last_seen = role, address, now
            if page is not None:
                visitor.page, visitor.run_id = page, run_id

    def leave(self, session: str) -> None:
        with self._lock:
            self._visitors.pop(session, None)

    def active(self, now: float | None = None) -> list[Visitor]:
        """Sessions seen within the timeout, longest-connected first (stale ones are dropped)."""
        now = time.time() if now is None else now
        with self._lock:
            for key in [k for k, v in self._visitors.items() if now - v.last_seen > self.timeout]:
                del self._visitors[key]
            return sorted(self._visitors.values(), key=lambda v: v.since)

    def watching(self, run_id: str, now: float | None = None) -> list[Visitor]:
        return [v for v in self.active(now) if v.run_id == run_id]

    def table(self, show_addresses: bool, me: str | None = None, now: float | None = None) -> list[dict]:
        """Rows for the dashboard; addresses only for the owner (viewers see roles and pages)."""
        now = time.time() if now is None else now
        rows = []
        for v in self.active(now):
            rows.append({
                "who": ("you · " if v.session == me else "") + v.label(show_addresses),
                "page": v.page, "run": v.run_id or "",
                "connected": round(now - v.since), "last seen (s ago)": round(now - v.last_seen, 1),
            })
        return rows
