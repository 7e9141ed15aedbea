"""Leader election through the state store: a lease row with an expiry and a term.

Any number of controllers may run (two Kubernetes replicas, a controller restarted while its old
process still lingers); only the holder of the ``controller`` lease acts. The holder renews the
lease every pass; a candidate takes it only once it has expired, with a compare-and-set ``UPDATE``
(so two candidates cannot both win) that bumps ``term``. A holder that could not renew stops acting
at ``expires_at - margin`` by its own clock (``still_held``), before anyone else may take over,
so two leaders never overlap as long as the clocks agree to within the margin.

This is the same scheme as Kubernetes' coordination/v1 Lease (``leaseDurationSeconds``,
``renewTime``, ``leaseTransitions``) used by client-go's leaderelection, kept in orch's own
database so that it works wherever the state store does (SQLite on one machine, PostgreSQL).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from orchestrator.state import tables as t
from orchestrator.state.engine import call_with_retry
from orchestrator.state.store import StateStore

DEFAULT_TTL_S = 15.0


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class LeaseState:
    name: str
    holder: str
    term: int
    acquired_at: float
    renewed_at: float
    expires_at: float


class Lease:
    def __init__(
        self,
        store: StateStore,
        name: str = "controller",
        holder: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        margin_s: float | None = None,
    ):
        self.store, self.name, self.holder, self.ttl_s = store, name, holder or default_holder(), ttl_s
        self.margin_s = ttl_s / 3 if margin_s is None else margin_s
        self.term: int | None = None  # the term this process holds, None when it does not lead
        self._valid_until = 0.0

    def acquire(self) -> bool:
        """Take or renew the lease; whether this process now leads."""
        now = self.store.clock.now()
        held = call_with_retry(self.store.url, lambda: self._acquire_once(now), "lease")
        if held:
            self._valid_until = now + self.ttl_s - self.margin_s
        else:
            self.term, self._valid_until = None, 0.0
        return held

    def _acquire_once(self, now: float) -> bool:
        c = t.leases.c
        with self.store.engine.begin() as conn:
            if self.term is not None:  # renew what this process holds (fails if someone took it over)
                renewed = conn.execute(
                    update(t.leases)
                    .where(c.name == self.name, c.holder == self.holder, c.term == self.term)
                    .values(renewed_at=now, expires_at=now + self.ttl_s)
                ).rowcount
                if renewed == 1:
                    return True
            row = conn.execute(select(t.leases).where(c.name == self.name)).mappings().first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(t.leases).values(
                                name=self.name,
                                holder=self.holder,
                                term=1,
                                acquired_at=now,
                                renewed_at=now,
                                expires_at=now + self.ttl_s,
                            )
                        )
                except IntegrityError:
                    return False  # another candidate inserted it first
                self.term = 1
                return True
            if row["expires_at"] > now and row["holder"] != self.holder:
                return False  # (the same holder, restarted, e.g. Ray's restarted controller actor, takes it back)
            taken = conn.execute(
                update(t.leases)
                .where(c.name == self.name, c.term == row["term"], or_(c.expires_at <= now, c.holder == self.holder))
                .values(
                    holder=self.holder,
                    term=row["term"] + 1,
                    acquired_at=now,
                    renewed_at=now,
                    expires_at=now + self.ttl_s,
                )
            ).rowcount
            if taken != 1:
                return False
            self.term = row["term"] + 1
            return True

    def still_held(self) -> bool:
        """Whether this process may still act, by its own clock (no database round trip): true
        until ``margin_s`` before the lease could expire for the others."""
        return self.term is not None and self.store.clock.now() < self._valid_until

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown), so a standby need not wait for the expiry."""
        if self.term is None:
            return
        term, now = self.term, self.store.clock.now()
        self.term, self._valid_until = None, 0.0

        def once() -> None:
            with self.store.engine.begin() as conn:
                conn.execute(
                    update(t.leases)
                    .where(t.leases.c.name == self.name, t.leases.c.holder == self.holder, t.leases.c.term == term)
                    .values(expires_at=now)
                )

        call_with_retry(self.store.url, once, "lease release")

    def current(self) -> LeaseState | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(t.leases).where(t.leases.c.name == self.name)).mappings().first()
        return LeaseState(**row) if row else None
