"""MQTT fan-out against a real mosquitto broker."""

from __future__ import annotations

import asyncio
import copy
import itertools
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiomqtt
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servers import (
    MosquittoProcess,
    make_tls_files,
    mosquitto_fixture,  # noqa: F401  (registers the `mosquitto` fixture)
    mosquitto_stopped_fixture,  # noqa: F401  (registers `mosquitto_stopped`)
)

from trailwarden.manager.mqtt import MqttConfig, MqttConfigError, MqttOutput
from trailwarden.manager.outputs import AlertSink, RenderedAlert
from trailwarden.manager.tls_client import ClientTls

DEADLINE_S = 20.0
FAST = {"backoff_initial_ms": 20, "backoff_max_ms": 200, "timeout_s": 5.0}
_ids = itertools.count()


@pytest.fixture
def base_alert(wazuh_ref: Path) -> dict[str, Any]:
    return orjson.loads((wazuh_ref / "examples" / "4x-alerts-json-80254-derived.json").read_bytes())


def make_alert(base: dict[str, Any], level: int, rule_id: str, i: int = 0) -> RenderedAlert:
    alert = copy.deepcopy(base)
    alert["rule"]["level"] = level
    alert["rule"]["id"] = rule_id
    alert["id"] = f"1764324000.{i}"
    return RenderedAlert(orjson.dumps(alert) + b"\n", alert)


def output(broker: MosquittoProcess, **kw: Any) -> MqttOutput:
    kw.setdefault("manager_name", "wazuh-manager")
    return MqttOutput(MqttConfig(host="127.0.0.1", port=broker.port, **(FAST | kw)))


async def wait_until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class Subscriber:
    """A plain aiomqtt subscriber collecting every message it gets."""

    def __init__(self, port: int, *topics: str, tls: ssl.SSLContext | None = None) -> None:
        self.client = aiomqtt.Client(
            "127.0.0.1", port, identifier=f"test-sub-{next(_ids)}", tls_context=tls
        )
        self.topics = topics
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        for topic in self.topics:
            await self.client.subscribe(topic, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.messages.append(message)

    async def wait_for(self, n: int) -> list[aiomqtt.Message]:
        await wait_until(lambda: len(self.messages) >= n, f"{n} messages")
        return self.messages

    def payloads(self, topic: str) -> list[bytes]:
        return [bytes(m.payload) for m in self.messages if m.topic.value == topic]  # type: ignore[arg-type]


async def retained_status(port: int, topic: str) -> bytes:
    """What a newcomer gets on the status topic: the retained value."""
    async with Subscriber(port, topic) as sub:
        [message] = await sub.wait_for(1)
        assert message.retain
        return bytes(message.payload)  # type: ignore[arg-type]


async def test_alerts_reach_subscribers_on_level_and_rule_topics(
    mosquitto: MosquittoProcess, base_alert: dict[str, Any]
) -> None:
    async with Subscriber(mosquitto.port, "trailwarden/alerts/#") as sub:
        out = output(mosquitto)
        sink: AlertSink = out
        await sink.start()
        alerts = [
            make_alert(base_alert, 3, "80253", 1),
            make_alert(base_alert, 5, "80254", 2),
            make_alert(base_alert, 10, "80255", 3),
        ]
        assert all(sink.submit(a) for a in alerts)
        assert await sink.flush(timeout_s=DEADLINE_S)
        messages = await sub.wait_for(3)
        await sink.close(5)
    assert sorted(m.topic.value for m in messages) == [
        "trailwarden/alerts/10/80255",
        "trailwarden/alerts/3/80253",
        "trailwarden/alerts/5/80254",
    ]
    assert all(m.qos == 1 and not m.retain for m in messages)
    by_topic = {m.topic.value: bytes(m.payload) for m in messages}  # type: ignore[arg-type]
    assert by_topic["trailwarden/alerts/5/80254"] == alerts[1].line.rstrip(b"\n")
    assert orjson.loads(by_topic["trailwarden/alerts/10/80255"])["id"] == "1764324000.3"
    assert out.stats()["published"] == 3


async def test_min_level_and_topic_prefix(
    mosquitto: MosquittoProcess, base_alert: dict[str, Any]
) -> None:
    async with Subscriber(mosquitto.port, "site1/tw/alerts/#") as sub:
        out = output(mosquitto, min_level=5, topic_prefix="site1/tw")
        await out.start()
        assert not out.submit(make_alert(base_alert, 3, "80253"))
        assert out.submit(make_alert(base_alert, 5, "80254"))
        assert out.submit(make_alert(base_alert, 12, "80255"))
        assert await out.flush(timeout_s=DEADLINE_S)
        await sub.wait_for(2)
        await out.close(5)
    assert sorted(m.topic.value for m in sub.messages) == [
        "site1/tw/alerts/12/80255",
        "site1/tw/alerts/5/80254",
    ]
    assert out.stats()["filtered"] == 1


async def test_status_is_retained_online_then_offline(mosquitto: MosquittoProcess) -> None:
    out = output(mosquitto, manager_name="mgr-a")
    await out.start()
    await wait_until(lambda: out.stats()["state"] == "connected", "connection")
    assert await retained_status(mosquitto.port, "trailwarden/status/mgr-a") == b"online"
    await out.close(5)
    assert await retained_status(mosquitto.port, "trailwarden/status/mgr-a") == b"offline"


PUBLISHER = """
import asyncio, sys
from trailwarden.manager.mqtt import MqttConfig, MqttOutput

async def main():
    out = MqttOutput(MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), manager_name="doomed"))
    await out.start()
    while out.stats()["state"] != "connected":
        await asyncio.sleep(0.01)
    print("connected", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_last_will_says_offline_when_the_manager_dies(mosquitto: MosquittoProcess) -> None:
    topic = "trailwarden/status/doomed"
    async with Subscriber(mosquitto.port, topic) as sub:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, str(mosquitto.port), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(DEADLINE_S):
                assert await proc.stdout.readline() == b"connected\n"
            await sub.wait_for(1)
            assert sub.payloads(topic) == [b"online"]
        finally:
            proc.kill()  # no clean disconnect: the broker must send the will
            await proc.wait()
        await sub.wait_for(2)
    assert sub.payloads(topic) == [b"online", b"offline"]
    assert await retained_status(mosquitto.port, topic) == b"offline"


async def test_broker_down_at_start_then_up(
    mosquitto_stopped: MosquittoProcess, base_alert: dict[str, Any]
) -> None:
    out = output(mosquitto_stopped, max_queue_count=5)
    await out.start()
    accepted = [out.submit(make_alert(base_alert, 8, "80255", i)) for i in range(12)]
    assert accepted == [True] * 5 + [False] * 7
    assert out.stats()["dropped_queue_full"] == 7
    await wait_until(lambda: out.stats()["connection_errors"] >= 2, "failed connects")
    assert out.stats()["state"] == "reconnecting"
    assert not await out.flush(timeout_s=0.2)

    mosquitto_stopped.start()
    assert await out.flush(timeout_s=DEADLINE_S)  # caught up within the queue bound
    assert out.stats()["published"] == 5
    async with Subscriber(mosquitto_stopped.port, "trailwarden/alerts/#") as sub:
        assert out.submit(make_alert(base_alert, 8, "80255", 99))
        [message] = await sub.wait_for(1)
    assert orjson.loads(bytes(message.payload))["id"] == "1764324000.99"  # type: ignore[arg-type]
    await out.close(5)
    assert out.stats()["dropped_at_close"] == 0


async def test_broker_killed_mid_run_never_blocks_submit(
    mosquitto: MosquittoProcess, base_alert: dict[str, Any]
) -> None:
    out = output(mosquitto)
    await out.start()
    await wait_until(lambda: out.stats()["state"] == "connected", "connection")
    mosquitto.stop(kill=True)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    accepted = [out.submit(make_alert(base_alert, 5, "80254", i)) for i in range(50)]
    assert loop.time() - t0 < 1  # generous: submit does no I/O
    assert all(accepted)
    await wait_until(lambda: out.stats()["state"] == "reconnecting", "the lost connection")

    mosquitto.start()  # same port, empty broker
    assert await out.flush(timeout_s=DEADLINE_S)
    assert out.stats()["published"] == 50
    assert int(out.stats()["connects"]) >= 2
    assert await retained_status(mosquitto.port, "trailwarden/status/wazuh-manager") == b"online"
    await out.close(5)


async def test_close_with_broker_down_counts_what_was_left(
    mosquitto_stopped: MosquittoProcess, base_alert: dict[str, Any]
) -> None:
    out = output(mosquitto_stopped)
    await out.start()
    for i in range(3):
        out.submit(make_alert(base_alert, 5, "80254", i))
    await out.close(0.3)
    stats = out.stats()
    assert (stats["dropped_at_close"], stats["queue_items"], stats["state"]) == (3, 0, "closed")
    assert not out.submit(make_alert(base_alert, 5, "80254"))


async def test_tls_broker_with_ca_file(tmp_path: Path, base_alert: dict[str, Any]) -> None:
    ca_file, cert_file, key_file = make_tls_files(tmp_path)
    workdir = tmp_path / "tls-broker"
    workdir.mkdir()
    broker = MosquittoProcess(workdir, extra_conf=f"certfile {cert_file}\nkeyfile {key_file}\n")
    broker.start()
    try:
        untrusted = output(broker, tls=ClientTls(), manager_name="no-ca")
        await untrusted.start()
        await wait_until(lambda: untrusted.stats()["connection_errors"] >= 1, "a refused TLS")
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.stats()["last_error"])
        await untrusted.close(0.2)

        client_ctx = ssl.create_default_context(cafile=str(ca_file))
        async with Subscriber(broker.port, "trailwarden/alerts/#", tls=client_ctx) as sub:
            out = output(broker, tls=ClientTls(ca_file=ca_file))
            await out.start()
            assert out.submit(make_alert(base_alert, 5, "80254", 7))
            [message] = await sub.wait_for(1)
            await out.close(5)
        assert message.topic.value == "trailwarden/alerts/5/80254"
    finally:
        broker.stop()


def test_config_is_validated() -> None:
    with pytest.raises(MqttConfigError, match="topic_prefix"):
        MqttConfig(host="h", manager_name="m", topic_prefix="a/#")
    with pytest.raises(MqttConfigError, match="manager_name"):
        MqttConfig(host="h", manager_name="a/b")
    with pytest.raises(MqttConfigError, match="edge"):
        MqttConfig(host="h", manager_name="m", topic_prefix="/tw")
    assert "hunter2" not in repr(
        MqttConfig(host="h", manager_name="m", username="u", password="hunter2")
    )
    assert MqttConfig(host="h", manager_name="m").status_topic == "trailwarden/status/m"
