"""Two protocol objects joined by an in-memory "network", for the wire tests.

Like h11's ``ConnectionPair``: what one side sends is handed to the other and
the receiver's events are collected, so a test reads as a conversation.
Randomness is injectable so that two pairs built with the same seeds derive
the same session keys (needed to replay one recorded stream into many fresh
receivers).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from trailwarden.common.wire import (
    NEED_DATA,
    AgentConnection,
    Connection,
    ConnectionClosed,
    Established,
    ManagerConnection,
)
from trailwarden.common.wire.events import ReceivedEvent, SendableEvent

AGENT_ID = "001"
# The shape Wazuh's authd gives a key: 64 hex characters.
AGENT_KEY = b"8c5bfbb5ec3bd7c0b3e2c6c4d1a0e5f2a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4"
OTHER_KEY = b"d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f2e5a0d1c4c6e2b3c0d7b3ce5bbfb5c8"


def fixed_random(seed: int) -> Callable[[int], bytes]:
    """A deterministic stand-in for secrets.token_bytes (tests only)."""
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        step = next(counter)
        return bytes((seed * 31 + step * 7 + i) % 256 for i in range(n))

    return random_bytes


def drain(conn: Connection) -> list[ReceivedEvent]:
    """Every event ``conn`` can produce from what it has buffered.

    Stops after ``ConnectionClosed``, which (as in h11) repeats forever.
    """
    events: list[ReceivedEvent] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


class ConnectionPair:
    def __init__(
        self,
        *,
        agent_id: str = AGENT_ID,
        agent_key: bytes = AGENT_KEY,
        manager_keys: dict[str, bytes] | None = None,
        agent_versions: tuple[int, ...] | None = None,
        manager_versions: tuple[int, ...] | None = None,
        seeded: bool = False,
    ) -> None:
        table = {AGENT_ID: AGENT_KEY} if manager_keys is None else manager_keys
        self.lookups: list[str] = []

        def lookup(agent: str) -> bytes | None:
            self.lookups.append(agent)
            return table.get(agent)

        agent_kwargs: dict[str, object] = {}
        manager_kwargs: dict[str, object] = {}
        if agent_versions is not None:
            agent_kwargs["versions"] = agent_versions
        if manager_versions is not None:
            manager_kwargs["versions"] = manager_versions
        if seeded:
            agent_kwargs["random_bytes"] = fixed_random(1)
            manager_kwargs["random_bytes"] = fixed_random(2)
        self.agent = AgentConnection(agent_id, agent_key, **agent_kwargs)  # type: ignore[arg-type]
        self.manager = ManagerConnection(lookup, **manager_kwargs)  # type: ignore[arg-type]
        # Everything each side sent, as the list of chunks it produced.
        self.sent: dict[Connection, list[bytes]] = {self.agent: [], self.manager: []}

    def peer(self, conn: Connection) -> Connection:
        return self.manager if conn is self.agent else self.agent

    def deliver(self, receiver: Connection, data: bytes) -> list[ReceivedEvent]:
        receiver.receive_data(data)
        return drain(receiver)

    def flush(self, sender: Connection) -> list[ReceivedEvent]:
        """Hand ``sender``'s pending protocol output to its peer."""
        data = sender.data_to_send()
        if not data:
            return []
        self.sent[sender].append(data)
        return self.deliver(self.peer(sender), data)

    def send(self, sender: Connection, event: SendableEvent) -> list[ReceivedEvent]:
        """``sender`` sends ``event``; the peer must receive exactly that event."""
        data = sender.send(event)
        self.sent[sender].append(data)
        received = self.deliver(self.peer(sender), data)
        assert received == [event], f"sent {event!r}, peer received {received!r}"
        return received

    def handshake(self) -> None:
        """Run the four handshake flights; both sides must report Established."""
        assert self.flush(self.agent) == []  # hello
        assert self.flush(self.manager) == []  # manager hello
        manager_events = self.flush(self.agent)  # agent proof
        agent_events = self.flush(self.manager)  # manager proof
        established = Established(self.agent.agent_id or "", self.manager.protocol_version or 0)
        assert manager_events == [established]
        assert agent_events == [established]
