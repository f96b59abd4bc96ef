"""Indexer output: the pipeline port (pure), then _bulk against a real osmem-server."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servers import (
    OsmemProcess,
    ScriptedHttpServer,
    TcpProxy,
    free_port,
    make_tls_files,
    osmem_fixture,  # noqa: F401  (registers the `osmem` fixture)
)

from trailwarden.manager.http_client import HttpClient, HttpConnectionError, HttpProtocolError
from trailwarden.manager.indexer import (
    IndexerConfig,
    IndexerConfigError,
    IndexerOutput,
    document_id,
)
from trailwarden.manager.ingest_pipeline import PipelineDrop, index_document
from trailwarden.manager.outputs import AlertSink, RenderedAlert
from trailwarden.manager.tls_client import ClientTls

DAY = "wazuh-alerts-4.x-2026.11.28"
FAST = {"linger_ms": 5, "backoff_initial_ms": 10, "backoff_max_ms": 100}


@pytest.fixture
def base_alert(wazuh_ref: Path) -> dict[str, Any]:
    return orjson.loads((wazuh_ref / "examples" / "4x-alerts-json-80254-derived.json").read_bytes())


@pytest.fixture
def template_path(wazuh_ref: Path) -> Path:
    return wazuh_ref / "indexer" / "wazuh-template.json"


def make_alert(
    base: dict[str, Any], i: int, ts: str = "2026-11-28T10:00:00.123+0000", **rule: Any
) -> RenderedAlert:
    alert = copy.deepcopy(base)
    alert["timestamp"] = ts
    alert["id"] = f"1764324000.{i * 1500}"
    alert["rule"].update(rule)
    alert["data"]["aws"]["eventID"] = f"11ea990b-4678-4bcd-8fbe-{i:012d}"
    return RenderedAlert(orjson.dumps(alert) + b"\n", alert)


async def wait_for(cond: Any, what: str, deadline_s: float = 20) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# -- the pipeline port ------------------------------------------------------------


def test_pipeline_adds_region_account_and_timestamp(base_alert: dict[str, Any]) -> None:
    before = copy.deepcopy(base_alert)
    index, doc = index_document(base_alert)
    assert index == "wazuh-alerts-4.x-2024.06.01"
    assert doc["@timestamp"] == "2024-06-01T10:00:00.123Z"
    assert doc["data"]["aws"]["region"] == "us-east-2"
    assert doc["data"]["aws"]["accountId"] == "111122223333"
    assert doc["data"]["aws"]["awsRegion"] == "us-east-2"
    assert base_alert == before  # the engine's dict is not touched
    assert doc["rule"] is base_alert["rule"]  # untouched branches are shared, not copied


def test_pipeline_set_is_override_false_and_ignores_empty(base_alert: dict[str, Any]) -> None:
    alert = copy.deepcopy(base_alert)
    alert["data"]["aws"]["region"] = "eu-west-1"
    alert["data"]["aws"]["awsRegion"] = ""
    del alert["data"]["aws"]["aws_account_id"]
    _, doc = index_document(alert)
    assert doc["data"]["aws"]["region"] == "eu-west-1"
    assert "accountId" not in doc["data"]["aws"]
    alert["data"]["aws"]["region"] = None  # null counts as absent
    alert["data"]["aws"]["awsRegion"] = "us-west-2"
    assert index_document(alert)[1]["data"]["aws"]["region"] == "us-west-2"
    no_aws = {"timestamp": "2026-11-28T10:00:00.000+0000", "data": {"srcip": "10.0.0.1"}}
    assert index_document(no_aws)[1]["data"] == {"srcip": "10.0.0.1"}


def test_pipeline_removes_filebeat_fields() -> None:
    alert = {"timestamp": "2026-11-28T10:00:00.000+0000", "host": {"name": "x"}, "tags": ["t"]}
    alert |= {"log": {"offset": 1}, "fields": {}, "rule": {"id": "1"}}
    assert sorted(index_document(alert)[1]) == ["@timestamp", "rule", "timestamp"]


@pytest.mark.parametrize(
    ("ts", "index", "at"),
    [
        ("2026-11-28T23:59:59.999+0000", "2026.11.28", "2026-11-28T23:59:59.999Z"),
        ("2026-11-29T00:00:00.000+0000", "2026.11.29", "2026-11-29T00:00:00.000Z"),
        # The manager's local midnight is not the index boundary: UTC is.
        ("2026-11-29T00:30:00.000+0100", "2026.11.28", "2026-11-28T23:30:00.000Z"),
        ("2026-11-28T20:00:00.000-0500", "2026.11.29", "2026-11-29T01:00:00.000Z"),
        ("2026-11-28T10:00:00.500", "2026.11.28", "2026-11-28T10:00:00.500Z"),  # naive: UTC
    ],
)
def test_pipeline_index_day_is_the_utc_day(ts: str, index: str, at: str) -> None:
    name, doc = index_document({"timestamp": ts}, "wazuh-archives-4.x-")
    assert name == f"wazuh-archives-4.x-{index}"
    assert doc["@timestamp"] == at


@pytest.mark.parametrize("ts", [None, 1764324000000, "28/11/2026 01:02", "2026-13-01T00:00:00"])
def test_pipeline_drops_what_it_cannot_date(ts: Any) -> None:
    alert = {"rule": {"id": "1"}} if ts is None else {"timestamp": ts}
    with pytest.raises(PipelineDrop):
        index_document(alert)


def test_document_id_survives_reanalysis(base_alert: dict[str, Any]) -> None:
    first = make_alert(base_alert, 1)
    again = copy.deepcopy(first.fields)
    again |= {"id": "1764999999.88", "timestamp": "2026-11-30T01:00:00.000+0000"}
    again["rule"]["firedtimes"] = 7
    assert document_id(again) == document_id(first.fields)
    assert document_id(make_alert(base_alert, 2).fields) != document_id(first.fields)
    other_rule = copy.deepcopy(first.fields)
    other_rule["rule"]["id"] = "80255"
    assert document_id(other_rule) != document_id(first.fields)
    other_agent = copy.deepcopy(first.fields)
    other_agent["agent"]["id"] = "001"
    assert document_id(other_agent) != document_id(first.fields)
    # With the agent's record identity, identical content stays distinct.
    assert document_id(first.fields, b"agent1/fp/1") != document_id(first.fields, b"agent1/fp/2")
    assert document_id(again, b"agent1/fp/1") == document_id(first.fields, b"agent1/fp/1")


def test_rendered_alert_from_line() -> None:
    alert = RenderedAlert.from_line(b'{"rule":{"id":"1"}}')
    assert alert.line == b'{"rule":{"id":"1"}}\n'
    assert alert.fields == {"rule": {"id": "1"}}
    with pytest.raises(ValueError, match="not JSON"):
        RenderedAlert.from_line(b'{"rule":')
    with pytest.raises(ValueError, match="JSON list"):
        RenderedAlert.from_line(b"[1]")


async def test_config_errors_never_echo_the_password() -> None:
    with pytest.raises(IndexerConfigError, match="go together"):
        IndexerConfig(url="http://127.0.0.1:9200", username="u")
    with pytest.raises(IndexerConfigError, match="index_prefix"):
        IndexerConfig(url="http://127.0.0.1:9200", index_prefix="Wazuh Alerts")
    out = IndexerOutput(IndexerConfig(url="https://admin:S3cret-pw@127.0.0.1:9200"))
    with pytest.raises(IndexerConfigError) as info:
        await out.start()
    assert "S3cret-pw" not in str(info.value)
    assert "S3cret-pw" not in repr(
        IndexerConfig(url="http://x:1", username="u", password="S3cret-pw")
    )


# -- against osmem-server ---------------------------------------------------------


async def test_template_bulk_count_and_mapping_types(
    osmem: OsmemProcess, base_alert: dict[str, Any], template_path: Path
) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, template=template_path, **FAST))
    sink: AlertSink = out
    await sink.start()
    alerts = [make_alert(base_alert, i) for i in range(120)]
    assert all(sink.submit(a) for a in alerts)
    assert await sink.flush(timeout_s=30)
    await sink.close(5)

    status, template = osmem.request("GET", "/_template/wazuh")
    assert status == 200
    assert "wazuh-alerts-4.x-*" in template["wazuh"]["index_patterns"]
    assert osmem.count(DAY) == 120
    _, mapping = osmem.request(
        "GET", f"/{DAY}/_mapping/field/rule.level,timestamp,data.aws.source_ip_address"
    )
    fields = mapping[DAY]["mappings"]
    assert fields["rule.level"]["mapping"]["level"]["type"] == "long"
    assert fields["timestamp"]["mapping"]["timestamp"]["type"] == "date"
    assert fields["data.aws.source_ip_address"]["mapping"]["source_ip_address"]["type"] == "ip"
    doc_id = document_id(alerts[7].fields)
    status, doc = osmem.request("GET", f"/{DAY}/_doc/{doc_id}")
    assert status == 200
    assert doc["_source"]["id"] == alerts[7].fields["id"]
    assert doc["_source"]["data"]["aws"]["region"] == "us-east-2"
    assert doc["_source"]["data"]["aws"]["accountId"] == "111122223333"
    assert doc["_source"]["@timestamp"] == "2026-11-28T10:00:00.123Z"
    stats = out.stats()
    assert stats["indexed"] == 120
    assert stats["template_installed"] == 1
    assert stats["bulk_requests"] >= 1
    assert stats["item_errors"] == 0
    assert stats["state"] == "closed"


async def test_dashboard_aggregations_have_buckets(
    osmem: OsmemProcess, base_alert: dict[str, Any], template_path: Path
) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, template=template_path, **FAST))
    await out.start()
    for i in range(10):
        out.submit(make_alert(base_alert, i))
    assert await out.flush(timeout_s=30)
    await out.close(5)
    osmem.request("POST", f"/{DAY}/_refresh")
    aggs = {
        name: {"terms": {"field": field}}
        for name, field in [
            ("sources", "data.aws.source"),
            ("accounts", "data.aws.accountId"),
            ("regions", "data.aws.region"),
            ("buckets", "data.aws.log_info.s3bucket"),
            ("rules", "rule.id"),
        ]
    }
    aggs["over_time"] = {"date_histogram": {"field": "timestamp", "fixed_interval": "1h"}}
    _, body = osmem.request("POST", "/wazuh-alerts-4.x-*/_search", {"size": 0, "aggs": aggs})
    for name in aggs:
        assert body["aggregations"][name]["buckets"], name
    regions = body["aggregations"]["regions"]["buckets"]
    assert regions == [{"key": "us-east-2", "doc_count": 10}]


async def test_one_index_per_utc_day(
    osmem: OsmemProcess, base_alert: dict[str, Any], template_path: Path
) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, template=template_path, **FAST))
    await out.start()
    out.submit(make_alert(base_alert, 1, "2026-11-28T23:59:59.999+0000"))
    out.submit(make_alert(base_alert, 2, "2026-11-29T00:00:00.000+0000"))
    out.submit(make_alert(base_alert, 3, "2026-11-29T00:30:00.000+0100"))
    assert await out.flush(timeout_s=30)
    await out.close(5)
    assert osmem.count("wazuh-alerts-4.x-2026.11.28") == 2
    assert osmem.count("wazuh-alerts-4.x-2026.11.29") == 1


async def test_item_errors_are_counted_and_logged_once(
    osmem: OsmemProcess,
    base_alert: dict[str, Any],
    template_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, template=template_path, **FAST))
    await out.start()
    good = [make_alert(base_alert, i) for i in range(9)]
    # A type conflict with the template: rule.level is a long.
    bad = [make_alert(base_alert, 100 + i, level="high") for i in range(2)]
    with caplog.at_level(logging.ERROR, logger="trailwarden.manager.indexer"):
        for alert in good[:5] + bad[:1] + good[5:] + bad[1:]:
            assert out.submit(alert)
        assert await out.flush(timeout_s=30)
    await out.close(5)
    assert osmem.count(DAY) == 9
    stats = out.stats()
    assert stats["indexed"] == 9
    assert stats["item_errors"] == 2
    assert stats["item_errors.mapper_parsing_exception"] == 2
    assert "mapper_parsing_exception" in str(stats["last_error"])
    records = [r for r in caplog.records if "mapper_parsing_exception" in r.getMessage()]
    assert len(records) == 1  # throttled per error type
    assert document_id(bad[0].fields) in records[0].getMessage()


async def test_pipeline_drops_are_counted(osmem: OsmemProcess, base_alert: dict[str, Any]) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, **FAST))
    await out.start()
    assert not out.submit(make_alert(base_alert, 1, "yesterday"))
    assert out.submit(make_alert(base_alert, 2))
    assert await out.flush(timeout_s=30)
    await out.close(5)
    assert out.stats()["dropped_invalid"] == 1
    assert out.stats()["indexed"] == 1


async def test_server_restart_loses_nothing(
    osmem: OsmemProcess, base_alert: dict[str, Any], template_path: Path
) -> None:
    out = IndexerOutput(IndexerConfig(url=osmem.url, template=template_path, **FAST))
    await out.start()
    first = [make_alert(base_alert, i) for i in range(10)]
    for alert in first:
        out.submit(alert)
    assert await out.flush(timeout_s=30)
    assert osmem.count(DAY) == 10

    osmem.stop()
    second = [make_alert(base_alert, 100 + i) for i in range(25)]
    for alert in second:
        assert out.submit(alert)  # returns at once while the server is down
    assert not await out.flush(timeout_s=0.5)
    await wait_for(lambda: out.stats()["connection_errors"] >= 2, "retries while down")
    assert out.stats()["state"] == "retrying"

    # osmem keeps everything in memory: it comes back empty, on the same port.
    osmem.start()
    assert await out.flush(timeout_s=30)
    await out.close(5)
    assert sorted(osmem.ids(DAY)) == sorted(document_id(a.fields) for a in second)
    assert out.stats()["indexed"] == 35
    assert out.stats()["dropped_at_close"] == 0


async def test_lost_response_is_retried_without_duplicates(
    osmem: OsmemProcess, base_alert: dict[str, Any], template_path: Path
) -> None:
    proxy = TcpProxy(osmem.port)
    await proxy.start()
    out = IndexerOutput(
        IndexerConfig(url=f"http://127.0.0.1:{proxy.port}", template=template_path, **FAST)
    )
    try:
        await out.start()
        await wait_for(lambda: out.stats()["template_installed"] == 1, "template")
        proxy.drop_responses = 1  # the server indexes the batch; its reply is lost
        alerts = [make_alert(base_alert, i) for i in range(40)]
        for alert in alerts:
            out.submit(alert)
        assert await out.flush(timeout_s=30)
        await out.close(5)
    finally:
        await proxy.stop()
    assert proxy.dropped == 1
    assert osmem.count(DAY) == 40
    stats = out.stats()
    # The resent batch hit the same _ids: every item was already there.
    assert stats["already_indexed"] == 40
    assert stats["indexed"] == 0


async def test_queue_full_drops_and_never_blocks(base_alert: dict[str, Any]) -> None:
    out = IndexerOutput(
        IndexerConfig(url=f"http://127.0.0.1:{free_port()}", max_queue_count=5, **FAST)
    )
    await out.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    accepted = [out.submit(make_alert(base_alert, i)) for i in range(20)]
    assert loop.time() - t0 < 5  # generous: submit does no I/O at all
    assert accepted == [True] * 5 + [False] * 15
    assert out.stats()["dropped_queue_full"] == 15
    assert not await out.flush(timeout_s=0.3)
    await out.close(0.1)
    stats = out.stats()
    assert stats["dropped_at_close"] == 5
    assert stats["queue_items"] == 0
    assert stats["connection_errors"] >= 1
    assert not out.submit(make_alert(base_alert, 99))  # closed


async def test_queue_bound_in_bytes(base_alert: dict[str, Any]) -> None:
    one = len(make_alert(base_alert, 0).line)
    out = IndexerOutput(
        IndexerConfig(url=f"http://127.0.0.1:{free_port()}", max_queue_bytes=one * 4, **FAST)
    )
    await out.start()
    accepted = [out.submit(make_alert(base_alert, i)) for i in range(10)]
    assert 1 <= sum(accepted) < 4  # a bulk item is the line plus its metadata
    assert int(out.stats()["queue_bytes"]) <= one * 4
    await out.close(0.1)


async def test_tls_with_ca_file_and_basic_auth(
    osmem: OsmemProcess,
    base_alert: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca_file, cert_file, key_file = make_tls_files(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    proxy = TcpProxy(osmem.port, server_ssl=server_ctx)  # TLS in front of osmem
    await proxy.start()
    url = f"https://127.0.0.1:{proxy.port}"
    password = "Pa55-word-never-logged"
    try:
        with caplog.at_level(logging.DEBUG):
            # System trust store only: our test CA is unknown, so nothing goes through.
            untrusted = IndexerOutput(
                IndexerConfig(url=url, username="shipper", password=password, **FAST)
            )
            await untrusted.start()
            untrusted.submit(make_alert(base_alert, 1))
            assert not await untrusted.flush(timeout_s=0.5)
            await untrusted.close(0.1)
            assert untrusted.stats()["connection_errors"] >= 1
            assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.stats()["last_error"])
            assert osmem.count(DAY) == 0

            trusted = IndexerOutput(
                IndexerConfig(
                    url=url,
                    username="shipper",
                    password=password,
                    tls=ClientTls(ca_file=ca_file),
                    **FAST,
                )
            )
            await trusted.start()
            trusted.submit(make_alert(base_alert, 2))
            assert await trusted.flush(timeout_s=30)
            await trusted.close(5)
    finally:
        await proxy.stop()
    assert osmem.count(DAY) == 1
    token = base64.b64encode(f"shipper:{password}".encode())
    assert b"Authorization: Basic " + token in proxy.seen
    assert all(password not in r.getMessage() for r in caplog.records)
    assert password not in str(trusted.stats()) + str(untrusted.stats())


# -- replies osmem does not give on demand: a scripted HTTP server ----------------


def bulk_reply(*statuses: int) -> bytes:
    items = []
    for status in statuses:
        outcome: dict[str, Any] = {"_index": DAY, "_id": "x", "status": status}
        if status >= 300:
            kind = {
                409: "version_conflict_engine_exception",
                429: "es_rejected_execution_exception",
            }
            outcome["error"] = {
                "type": kind.get(status, "illegal_argument_exception"),
                "reason": "r",
            }
        items.append({"create": outcome})
    return orjson.dumps({"took": 1, "errors": any(s >= 300 for s in statuses), "items": items})


async def run_scripted(
    replies: list[tuple[int, bytes]], alerts: list[RenderedAlert], **cfg: Any
) -> tuple[IndexerOutput, ScriptedHttpServer]:
    server = ScriptedHttpServer(replies, default=(500, b'{"error":"script ran out"}'))
    await server.start()
    out = IndexerOutput(IndexerConfig(url=server.url, **(FAST | cfg)), rng=lambda: 0.0)
    try:
        await out.start()
        for alert in alerts:
            out.submit(alert)
        assert await out.flush(timeout_s=20)
        await out.close(1)
    finally:
        await server.stop()
    return out, server


def bulk_ids(body: bytes) -> list[str]:
    lines = body.splitlines()
    return [orjson.loads(meta)["create"]["_id"] for meta in lines[0::2]]


async def test_rejected_items_alone_are_resent(base_alert: dict[str, Any]) -> None:
    alerts = [make_alert(base_alert, i) for i in range(3)]
    out, server = await run_scripted(
        [(200, bulk_reply(201, 429, 409)), (200, bulk_reply(201))], alerts
    )
    assert [m for m, _, _ in server.requests] == ["POST", "POST"]
    assert bulk_ids(server.requests[1][2]) == [document_id(alerts[1].fields)]
    stats = out.stats()
    assert (stats["indexed"], stats["already_indexed"], stats["items_retried"]) == (2, 1, 1)


async def test_whole_request_retries_split_and_rejects(base_alert: dict[str, Any]) -> None:
    alerts = [make_alert(base_alert, i) for i in range(4)]
    out, server = await run_scripted(
        [
            (503, b'{"error":{"type":"unavailable","reason":"busy"}}'),
            (413, b"{}"),  # too large: split in two
            (200, bulk_reply(201, 201)),
            (400, b'{"error":{"type":"parse_exception","reason":"bad"}}'),
        ],
        alerts,
        max_batch_count=4,
    )
    sizes = [len(bulk_ids(body)) for _, _, body in server.requests]
    assert sizes == [4, 4, 2, 2]
    stats = out.stats()
    assert (stats["indexed"], stats["rejected"], stats["http_errors"]) == (2, 2, 2)


async def test_malformed_bulk_reply_is_retried(base_alert: dict[str, Any]) -> None:
    out, server = await run_scripted(
        [(200, b"<html>proxy error</html>"), (200, bulk_reply(201))],
        [make_alert(base_alert, 1)],
    )
    assert len(server.requests) == 2
    assert out.stats()["indexed"] == 1


async def test_template_refused_is_logged_and_shipping_goes_on(
    base_alert: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="trailwarden.manager.indexer"):
        out, server = await run_scripted(
            [
                (400, b'{"error":{"type":"illegal_argument_exception","reason":"bad setting"}}'),
                (200, bulk_reply(201)),
            ],
            [make_alert(base_alert, 1)],
            template={"index_patterns": ["x-*"], "mappings": {}},
        )
    assert [r[:2] for r in server.requests] == [("PUT", "/_template/wazuh"), ("POST", "/_bulk")]
    stats = out.stats()
    assert (stats["template_installed"], stats["template_errors"], stats["indexed"]) == (0, 1, 1)
    assert any("illegal_argument_exception" in r.getMessage() for r in caplog.records)


async def test_composable_template_goes_to_index_template(base_alert: dict[str, Any]) -> None:
    _, server = await run_scripted(
        [(200, b'{"acknowledged":true}'), (200, bulk_reply(201))],
        [make_alert(base_alert, 1)],
        template={"index_patterns": ["x-*"], "template": {"mappings": {}}},
        template_name="trailwarden",
    )
    assert server.requests[0][:2] == ("PUT", "/_index_template/trailwarden")


# -- the HTTP/1.1 client on real loopback sockets ---------------------------------


class RawServer:
    """Answers each request on a connection with the next raw reply, then
    optionally closes the connection."""

    def __init__(self, replies: list[bytes], close_after_each: bool = False) -> None:
        self.replies = replies
        self.close_after_each = close_after_each
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if not self.replies:
                await reader.read()  # silent: wait for the client to give up
            while self.replies:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.replies.pop(0))
                await writer.drain()
                if self.close_after_each:
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        writer.close()


async def test_http_client_reads_chunked_and_close_delimited_bodies() -> None:
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]
    async with RawServer(replies) as server:
        client = HttpClient(f"http://127.0.0.1:{server.port}/base/")
        first = await client.request("GET", "/a")
        second = await client.request("PUT", "/b", b"{}")
        third = await client.request("GET", "/c")
        await client.close()
    assert (first.status, first.body) == (200, b"hello world")
    assert (second.status, second.body) == (201, b"ok")
    assert (third.status, third.body) == (200, b"until the end")
    assert server.connections == 1


async def test_http_client_retries_once_on_a_closed_keepalive_connection() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with RawServer([ok, ok], close_after_each=True) as server:
        client = HttpClient(f"http://127.0.0.1:{server.port}")
        assert (await client.request("GET", "/")).body == b"ok"
        await asyncio.sleep(0.05)  # the server has closed the idle connection
        assert (await client.request("POST", "/_bulk", b"x")).body == b"ok"
        await client.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", "over"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "head over"),
    ],
)
async def test_http_client_rejects_bad_replies(reply: bytes, match: str) -> None:
    async with RawServer([reply]) as server:
        client = HttpClient(f"http://127.0.0.1:{server.port}", max_response_bytes=1 << 20)
        with pytest.raises(HttpProtocolError, match=match):
            await client.request("GET", "/")
        await client.close()


async def test_http_client_gives_up_on_a_silent_server() -> None:
    async with RawServer([]) as server:  # accepts, never answers
        client = HttpClient(f"http://127.0.0.1:{server.port}", request_timeout_s=0.2)
        with pytest.raises(HttpConnectionError, match="timed out"):
            await client.request("GET", "/")
        await client.close()
