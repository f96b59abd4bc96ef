"""Wazuh's enrollment line protocol: the exact lines agent-auth sends and authd answers."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trailwarden.common.enrollment_protocol import (
    MAX_GROUPS,
    MAX_REQUEST_BYTES,
    EnrollmentRequest,
    ErrorReply,
    Refusal,
    ReplyError,
    RequestRefused,
    agent_name_from_hostname,
    classify_reason,
    format_error_reply,
    format_key_reply,
    format_request,
    is_valid_agent_name,
    key_hash,
    parse_reply,
    parse_request,
    parse_wazuh_version,
)
from trailwarden.common.keys import AgentKey

KEY = "6dd186d1740f6c80d4d380ebe72c8061db175881e07e809eb44404c836a7ef96"
AGENT = AgentKey("001", "Agent1", "any", KEY)
AGENT_HASH = hashlib.sha1(b"001Agent1" + KEY.encode()).hexdigest()


def wazuh_agent_line(
    name: str,
    *,
    password: str | None = None,
    version: str | None = "v4.14.7",
    group: str | None = None,
    sender_ip: str | None = None,
    use_src_ip: bool = False,
    key: AgentKey | None = None,
) -> bytes:
    """The request w_enrollment_send_message (src/shared/enrollment_op.c) builds,
    its snprintf/strcat steps restated."""
    buf = f"OSSEC PASS: {password} OSSEC A:'{name}'" if password else f"OSSEC A:'{name}'"
    if version:
        buf += f" V:'{version}'"
    if group:
        buf += f" G:'{group}'"
    if sender_ip and not use_src_ip:
        buf += f" IP:'{sender_ip}'"
    elif use_src_ip:
        buf += " IP:'src'"
    if key is not None:
        digest = hashlib.sha1(f"{key.agent_id}{key.name}{key.key}".encode()).hexdigest()
        buf += f" K:'{digest}'"
    return (buf + "\n").encode()


# -- requests Wazuh agents send ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # agent-auth of 3.x: no version, no password.
        (b"OSSEC A:'web-1'", EnrollmentRequest("web-1")),
        # A 4.14 agent with every field.
        (
            b"OSSEC PASS: s3cret OSSEC A:'Agent1' V:'v4.14.7' G:'web,linux' IP:'10.0.0.5'"
            b" K:'" + AGENT_HASH.encode() + b"'",
            EnrollmentRequest(
                "Agent1", b"s3cret", "v4.14.7", ("web", "linux"), "10.0.0.5", AGENT_HASH
            ),
        ),
        # <use_source_ip>yes on the agent.
        (
            b"OSSEC PASS: s3cret OSSEC A:'ip-10-0-1-7.ec2.internal' V:'v4.5.0' IP:'src'",
            EnrollmentRequest("ip-10-0-1-7.ec2.internal", b"s3cret", "v4.5.0", (), "src"),
        ),
        # A network instead of an address; IPv6.
        (b"OSSEC A:'db_2' IP:'10.0.3.0/24'", EnrollmentRequest("db_2", ip="10.0.3.0/24")),
        (b"OSSEC A:'db_3' IP:'2001:db8::7'", EnrollmentRequest("db_3", ip="2001:db8::7")),
        # Repeated groups are dropped, order kept (wstr_delete_repeated_groups).
        (b"OSSEC A:'web-2' G:'a,b,a'", EnrollmentRequest("web-2", groups=("a", "b"))),
    ],
)
def test_parses_the_lines_wazuh_agents_send(line: bytes, expected: EnrollmentRequest) -> None:
    password = expected.password
    parsed = parse_request(line, password=password)
    assert parsed == expected
    assert parsed.password == expected.password


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"password": "topsecret"},
        {"password": "topsecret", "group": "default", "use_src_ip": True, "key": AGENT},
        {"version": None, "sender_ip": "192.0.2.4"},
        {"password": "pass with spaces", "group": "a,b,c", "sender_ip": "10.0.0.0/8"},
    ],
)
def test_format_request_matches_the_wazuh_agent_byte_for_byte(kwargs: dict[str, object]) -> None:
    password = kwargs.get("password")
    request = EnrollmentRequest(
        name="Agent1",
        password=password.encode() if isinstance(password, str) else None,
        version=kwargs.get("version", "v4.14.7"),  # type: ignore[arg-type]
        groups=tuple(str(kwargs["group"]).split(",")) if "group" in kwargs else (),
        ip="src" if kwargs.get("use_src_ip") else kwargs.get("sender_ip"),  # type: ignore[arg-type]
        key_hash=key_hash(AGENT) if "key" in kwargs else None,
    )
    assert format_request(request) == wazuh_agent_line("Agent1", **kwargs)  # type: ignore[arg-type]
    line = format_request(request)
    assert parse_request(line[:-1], password=request.password) == request


def test_key_hash_is_sha1_of_id_name_and_key() -> None:
    assert key_hash(AGENT) == AGENT_HASH
    assert len(AGENT_HASH) == 40


# -- the password ---------------------------------------------------------------------


def test_password_is_checked_as_wazuh_does() -> None:
    line = b"OSSEC PASS: topsecret OSSEC A:'web-1'"
    assert parse_request(line, password=b"topsecret").name == "web-1"
    for wrong in (b"topsecre", b"topsecrets", b"TOPSECRET", b"x"):
        with pytest.raises(RequestRefused) as caught:
            parse_request(line, password=wrong)
        assert caught.value.refusal is Refusal.INVALID_PASSWORD
        assert caught.value.reply() == b"ERROR: Invalid password. Unable to add agent"


def test_missing_password_is_an_invalid_password() -> None:
    with pytest.raises(RequestRefused) as caught:
        parse_request(b"OSSEC A:'web-1'", password=b"topsecret")
    assert caught.value.refusal is Refusal.INVALID_PASSWORD


def test_password_with_spaces_and_non_ascii_bytes() -> None:
    password = "pa ss wörd".encode()
    line = b"OSSEC PASS: " + password + b" OSSEC A:'web-1'"
    request = parse_request(line, password=password)
    assert request.password == password
    with pytest.raises(RequestRefused):
        parse_request(line, password=b"pa ss word")


def test_password_is_checked_before_anything_else() -> None:
    # Wazuh answers "Invalid password" even when the rest of the line is garbage.
    with pytest.raises(RequestRefused) as caught:
        parse_request(b"OSSEC PASS: wrong OSSEC A:'bad name!'", password=b"right")
    assert caught.value.refusal is Refusal.INVALID_PASSWORD


def test_unneeded_password_is_accepted_and_ignored() -> None:
    request = parse_request(b"OSSEC PASS: whatever OSSEC A:'web-1' V:'v4.14.7'", password=None)
    assert (request.name, request.version, request.password) == ("web-1", "v4.14.7", b"whatever")


def test_password_is_not_in_repr() -> None:
    request = parse_request(b"OSSEC PASS: hunter2 OSSEC A:'web-1'", password=b"hunter2")
    assert "hunter2" not in repr(request)


# -- refusals with Wazuh's reason texts -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "refusal", "reply"),
    [
        (
            b"",
            Refusal.INVALID_REQUEST,
            b"ERROR: Invalid request for new agent. Unable to add agent",
        ),
        (b"HELLO", Refusal.INVALID_REQUEST, None),
        (b"OSSEC A:'web-1", Refusal.INVALID_REQUEST, None),
        (
            b"OSSEC A:'x'",
            Refusal.INVALID_NAME,
            b"ERROR: Invalid agent name: x. Unable to add agent",
        ),
        (b"OSSEC A:'web 1'", Refusal.INVALID_NAME, None),
        (b"OSSEC A:'" + b"a" * 129 + b"'", Refusal.INVALID_NAME, None),
        (
            b"OSSEC A:'agent3' V:'v4.5.0",
            Refusal.UNTERMINATED_FIELD,
            b"ERROR: Unterminated version field. Unable to add agent",
        ),
        (
            b"OSSEC A:'agent3' G:'Group1,Group2' IP:'192.0.0.3' K:'ABC123",
            Refusal.UNTERMINATED_FIELD,
            b"ERROR: Unterminated key field. Unable to add agent",
        ),
        (b"OSSEC A:'agent3' G:'Group1", Refusal.UNTERMINATED_FIELD, None),
        (b"OSSEC A:'agent3' IP:'10.0.0.1", Refusal.UNTERMINATED_FIELD, None),
        (
            b"OSSEC A:'agent3' IP:'10.0.0.300'",
            Refusal.INVALID_IP,
            b"ERROR: Invalid IP: 10.0.0.300. Unable to add agent",
        ),
        (b"OSSEC A:'agent3' IP:'any host'", Refusal.INVALID_IP, None),
        (b"OSSEC A:'agent3' G:'web,'", Refusal.INVALID_GROUP, None),
        (b"OSSEC A:'agent3' G:'..'", Refusal.INVALID_GROUP, None),
        (b"OSSEC A:'agent3' G:'we b'", Refusal.INVALID_GROUP, None),
        (b"OSSEC A:'agent3' V:'latest'", Refusal.INVALID_VERSION, None),
        (b"OSSEC A:'agent3' K:'" + b"g" * 40 + b"'", Refusal.INVALID_KEY_HASH, None),
        (b"OSSEC A:'agent3' K:'abc'", Refusal.INVALID_KEY_HASH, None),
        # Fields out of order, or text after the last one: refused, not ignored.
        (b"OSSEC A:'agent3' G:'web' V:'v4.14.7'", Refusal.INVALID_REQUEST, None),
        (b"OSSEC A:'agent3' trailing", Refusal.INVALID_REQUEST, None),
    ],
)
def test_malformed_requests_are_refused_with_wazuh_reasons(
    line: bytes, refusal: Refusal, reply: bytes | None
) -> None:
    with pytest.raises(RequestRefused) as caught:
        parse_request(line, password=None)
    assert caught.value.refusal is refusal
    if reply is not None:
        assert caught.value.reply() == reply


def test_too_many_groups() -> None:
    groups = ",".join(f"g{i}" for i in range(MAX_GROUPS + 1))
    with pytest.raises(RequestRefused) as caught:
        parse_request(f"OSSEC A:'web-1' G:'{groups}'".encode(), password=None)
    assert caught.value.refusal is Refusal.TOO_MANY_GROUPS
    assert caught.value.reason == "Maximum multigroup reached: Limit is 128"
    ok = ",".join(f"g{i}" for i in range(MAX_GROUPS))
    assert len(parse_request(f"OSSEC A:'web-1' G:'{ok}'".encode(), password=None).groups) == 128


def test_echoed_input_is_cut_and_escaped() -> None:
    with pytest.raises(RequestRefused) as caught:
        parse_request(b"OSSEC A:'" + b"\x1b[31m" * 100 + b"'", password=None)
    reason = caught.value.reason
    assert "\x1b" not in reason and reason.endswith("...")
    assert len(reason) < 700


# -- replies --------------------------------------------------------------------------


def test_key_reply_is_authd_414_format() -> None:
    assert format_key_reply(AGENT) == f"OSSEC K:'001 Agent1 any {KEY}'".encode()


def test_error_reply_format() -> None:
    assert format_error_reply("Duplicate agent name: web-1") == (
        b"ERROR: Duplicate agent name: web-1. Unable to add agent"
    )


@pytest.mark.parametrize(
    "data",
    [
        f"OSSEC K:'001 Agent1 any {KEY}'".encode(),
        # authd before 4.x appended two newlines.
        f"OSSEC K:'001 Agent1 any {KEY}'\n\n".encode(),
    ],
)
def test_parse_key_reply(data: bytes) -> None:
    assert parse_reply(data) == AGENT


def test_parse_error_replies() -> None:
    reply = parse_reply(b"ERROR: Invalid password. Unable to add agent")
    assert reply == ErrorReply("Invalid password", Refusal.INVALID_PASSWORD)
    reply = parse_reply(b"ERROR: Duplicate agent name: web-1 (agent 001 is connected)")
    assert isinstance(reply, ErrorReply) and reply.refusal is Refusal.DUPLICATE_NAME
    # Wazuh 5.0's agent limit is not one of ours: still an error, of kind OTHER.
    assert classify_reason("Agent limit (10) reached") is Refusal.OTHER


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"OSSEC K:'001 Agent1 any'",
        b"OSSEC K:'001 Agent1 any " + KEY.encode(),
        b"OSSEC K:'abc Agent1 any " + KEY.encode() + b"'",
    ],
)
def test_malformed_replies(data: bytes) -> None:
    with pytest.raises(ReplyError):
        parse_reply(data)


# -- helpers --------------------------------------------------------------------------


def test_versions() -> None:
    assert parse_wazuh_version("v4.14.7") == (4, 14, 7)
    assert parse_wazuh_version("4.2") == (4, 2, 0)
    assert parse_wazuh_version("v5") == (5, 0, 0)
    assert parse_wazuh_version("v4.14.7-rc1") is None
    assert parse_wazuh_version("") is None


def test_names() -> None:
    assert is_valid_agent_name("ip-10-0-1-7.ec2.internal")
    assert not is_valid_agent_name("a")
    assert not is_valid_agent_name("web/1")
    assert agent_name_from_hostname("my host(1).local") == "myhost1.local"


def test_format_request_refuses_what_a_manager_cannot_read() -> None:
    with pytest.raises(ValueError, match="agent name"):
        format_request(EnrollmentRequest("bad name"))
    with pytest.raises(ValueError, match="newline"):
        format_request(EnrollmentRequest("web-1", password=b"a\nb"))
    with pytest.raises(ValueError, match="IP"):
        format_request(EnrollmentRequest("web-1", ip="nowhere"))
    with pytest.raises(ValueError, match="exceeds"):
        format_request(EnrollmentRequest("web-1", password=b"p" * MAX_REQUEST_BYTES))


names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=2,
    max_size=128,
)


@given(
    name=names,
    password=st.one_of(
        st.none(), st.binary(min_size=1, max_size=64).filter(lambda b: b"\n" not in b)
    ),
    version=st.one_of(st.none(), st.tuples(*[st.integers(0, 99)] * 3)),
    # "." and ".." are refused as group names (they are paths on the manager).
    groups=st.lists(names.filter(lambda g: g not in (".", "..")), max_size=5, unique=True),
    ip=st.sampled_from([None, "src", "any", "10.1.2.3", "10.0.0.0/8", "2001:db8::1"]),
    with_hash=st.booleans(),
)
def test_round_trip(
    name: str,
    password: bytes | None,
    version: tuple[int, int, int] | None,
    groups: list[str],
    ip: str | None,
    with_hash: bool,
) -> None:
    request = EnrollmentRequest(
        name,
        password,
        None if version is None else "v{}.{}.{}".format(*version),
        tuple(groups),
        ip,
        key_hash(AGENT) if with_hash else None,
    )
    line = format_request(request)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    parsed = parse_request(line[:-1], password=password)
    assert parsed == request and parsed.password == password


@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda tail: b"OSSEC PASS: pw OSSEC A:'" + tail,
            st.binary(max_size=300),
        ),
    ),
    password=st.sampled_from([None, b"pw"]),
)
def test_hostile_request_lines_only_ever_refuse(data: bytes, password: bytes | None) -> None:
    try:
        request = parse_request(data, password=password)
    except RequestRefused as exc:
        reply = exc.reply()
        assert reply.startswith(b"ERROR: ") and reply.endswith(b". Unable to add agent")
        assert b"\n" not in reply and len(reply) < 1024
    else:
        assert is_valid_agent_name(request.name)


@given(st.binary(max_size=400))
def test_hostile_replies_only_ever_raise_reply_error(data: bytes) -> None:
    try:
        reply = parse_reply(data)
    except ReplyError as exc:
        assert len(str(exc)) < 1024
    else:
        assert isinstance(reply, AgentKey | ErrorReply)
