"""Wrap one CloudTrail record exactly as the Wazuh 4.x ``aws-s3`` wodle does.

Stock Wazuh rules (``0350-amazon_rules.xml``), the index template and the AWS
dashboards expect the shape the wodle sends to analysisd, so the agent sends the
same message and the manager decodes it with the stock ``json`` decoder::

    {"integration":"aws","aws":{"log_info":{...},<record keys>,"source":"cloudtrail",
     "aws_account_id":"...","source_ip_address":"..."}}

Theory of operation
-------------------
The wodle builds the message in this order (``wodles/aws/buckets_s3/aws_bucket.py``
``AWSLogsBucket.load_information_from_file`` / ``get_alert_msg`` /
``AWSBucket.reformat_msg`` and ``cloudtrail.py`` ``reformat_msg``):

1. ``event = dict(record, source="cloudtrail")``: ``source`` keeps the position of
   an existing ``source`` key, otherwise it is appended.
2. ``remove_none_fields(event)``: drop ``None`` values, recursing into dicts only.
3. ``msg["aws"].update(event)`` after ``log_info``; then ``aws_account_id`` is set.
   Plain dict assignment: a record key that collides (``log_info``,
   ``aws_account_id``) keeps its position and gets the later value.
4. ``single_element_list_to_dictionary(msg)``: every list of length 1 that is a
   value of a dict reached through dicts only becomes its element. The element is
   not visited again, and lists are never entered.
5. ``source_ip_address`` is set when ``re.match(r"\\d+\\.\\d+.\\d+.\\d+",
   sourceIPAddress)`` (the wodle's pattern: two unescaped dots, anchored at the
   start only). We are stricter: see the deliberate differences.
6. A non-dict top-level ``tags`` becomes ``{"value": tags}``.
7. A non-dict ``additionalEventData``/``responseElements``/``requestParameters``
   becomes ``{"string": str(value)}``: Python ``str()``, so a list shows as its
   Python repr (``"['a', 'b']"``), a bool as ``"True"``.
8. A bool ``requestParameters.disableApiTermination`` becomes ``{"value": bool}``.

Steps 2 and 4 both walk dicts only, so one recursive pass does both: drop ``None``
values, recurse into dict values, collapse one-element lists (a collapsed ``[None]``
stays ``None``, as in the wodle, because removal ran first). The pass builds new
dicts, so the caller's record is never mutated.

Deliberate differences:
- ``source_ip_address`` is set only when ``sourceIPAddress`` is exactly one IPv4
  address as the indexer's ``ip`` type parses it (four decimal octets 0-255, no
  leading zeros). Wazuh's index template maps the field as ``ip``; the wodle's
  pattern also copies ``"035.249.253.232"`` (anonymised Stratus logs) and
  ``"81.2.69.142, 192.168.10.10"`` (a proxy chain), and the indexer then refuses
  the whole alert. ``sourceIPAddress`` itself is always kept as sent;
- members whose shape depends on the API (``POLYMORPHIC_MEMBERS``): a concrete
  value is moved one level down (``{"arn": "..."}``), the wodle's own remedy for
  ``tags`` and ``disableApiTermination`` applied where CloudTrail really clashes,
  so each day's index types the member as an object whatever event comes first;
- compact separators, raw UTF-8 and orjson's float spelling (the wodle's
  ``json.dumps`` writes ``", "``, ``\\uXXXX`` escapes and ``1e+16``): the same
  values once parsed; our default rules match ``"errorCode":"..."`` in the raw text;
- where the wodle would crash (a non-string ``sourceIPAddress`` makes ``re.match``
  raise ``TypeError`` and the wodle exits), we simply add no ``source_ip_address``;
- the wodle always knows the account id from the S3 key. When the file does not
  follow the S3 layout we fall back to the record's ``recipientAccountId`` and then
  ``userIdentity.accountId``; if neither is a string, ``aws_account_id`` is omitted;
- records are parsed by orjson, which reads integers beyond 64 bits as floats, so
  such a number cast by step 7 prints as a float where the wodle prints the integer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

_native: ModuleType | None
try:  # the C twin of FileWrapper over a whole document (setup.py builds it)
    from trailwarden.agent import _envelope as _native
except ImportError:  # pure-Python install: FileWrapper.wrap_owned per record
    _native = None
NATIVE_WRAPPER = _native is not None

# The wodle's location: messages reach analysisd as "1:Wazuh-AWS:<json>".
WODLE_LOCATION = "Wazuh-AWS"

# One IPv4 address as the indexer's ip type (and Python's ipaddress) parses it:
# octets 0-255 without leading zeros, used with fullmatch. The wodle's
# r"\d+\.\d+.\d+.\d+" with re.match lets through values the indexer refuses.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")

# cloudtrail.py casts these to {"string": str(value)} when they are not dicts.
_CAST_TO_STRING = ("additionalEventData", "responseElements", "requestParameters")

# (member, key, wrapper): payload keys that are an object in some APIs' events and
# a concrete value in others. The first event of a day maps the key in that day's
# index, so an event of the other shape is refused by the indexer (Wazuh's template
# maps payloads dynamically). A concrete value (str, number, bool) becomes
# {wrapper: value}; lists are left alone (a list of objects maps as an object).
# Stock Wazuh rules read only aws.responseElements.ConsoleLogin in these members.
POLYMORPHIC_MEMBERS: tuple[tuple[str, str, str], ...] = (
    # IAM CreateRole/GetRole return the Role object (roleName, arn, ...); Lambda's
    # function configuration (CreateFunction, UpdateFunctionCode, ...) gives the
    # execution role's ARN as a string: it lands at role.arn, where IAM has it.
    ("responseElements", "role", "arn"),
)
_CONCRETE = frozenset((str, int, float, bool))
# The default of _finish's lookups: a dict, so an absent key needs no cast. Never written.
_ABSENT: dict[str, Any] = {}


class EnvelopeError(ValueError):
    """The record cannot be expressed as a wodle message (bad input, e.g. nested
    deeper than orjson serialises)."""


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    """Steps 2 and 4 for one dict: drop None, recurse into dicts, collapse 1-lists."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        # Exact-type checks first: orjson yields plain str/dict/list, strings dominate.
        t = type(value)
        if t is str:
            out[key] = value
        elif t is dict:
            out[key] = _clean(value)
        elif t is list:
            out[key] = value[0] if len(value) == 1 else value
        elif value is not None:
            if isinstance(value, dict):
                value = _clean(value)
            elif isinstance(value, list) and len(value) == 1:
                value = value[0]
            out[key] = value
    return out


def _clean_owned(node: dict[str, Any]) -> dict[str, Any]:
    """``_clean`` done in place, for a tree the caller owns (a fresh parse, no
    shared sub-objects): no new dicts, about a third less time."""
    dropped: list[str] | None = None
    for key, value in node.items():
        t = type(value)
        if t is str:
            continue
        if t is dict:
            _clean_owned(value)
        elif t is list:
            if len(value) == 1:
                node[key] = value[0]  # replacing a value keeps iteration valid
        elif value is None:
            if dropped is None:
                dropped = [key]
            else:
                dropped.append(key)
        elif t is bool or t is int or t is float:
            continue  # readOnly, managementEvent...: spares two isinstance calls
        elif isinstance(value, dict):
            _clean_owned(value)
        elif isinstance(value, list) and len(value) == 1:
            node[key] = value[0]
    if dropped is not None:
        for key in dropped:
            del node[key]
    return node


def fallback_account_id(record: dict[str, Any]) -> str | None:
    """The account to report when the file path carries none.

    ``recipientAccountId`` is the account whose trail delivered the event (what the
    S3 path would have said); ``userIdentity.accountId`` is the caller's account,
    the best remaining guess (AwsServiceEvent records carry only that).
    """
    recipient = record.get("recipientAccountId")
    if isinstance(recipient, str) and recipient:
        return recipient
    identity = record.get("userIdentity")
    if isinstance(identity, dict):
        account = identity.get("accountId")
        if isinstance(account, str) and account:
            return account
    return None


def build_message(
    record: dict[str, Any],
    *,
    log_file: str,
    bucket: str,
    account_id: str | None,
    account_alias: str = "",
    owned: bool = False,
) -> dict[str, Any]:
    """The wodle message as a Python dict (see the module docstring for the steps).

    ``owned``: the record is a fresh parse the caller will not use again, so
    its nested dicts may be cleaned in place (the result is the same).
    """
    log_info = {"aws_account_alias": account_alias, "log_file": log_file, "s3bucket": bucket}
    return _message(record, log_info, account_id, owned)


def _message(
    record: dict[str, Any], log_info: dict[str, str], account_id: str | None, owned: bool
) -> dict[str, Any]:
    if account_id is None:
        account_id = fallback_account_id(record)
    aws: dict[str, Any] = {"log_info": log_info}
    if owned:
        # Copy every key in C, then fix up the few values that are not strings.
        aws.update(record)
        for key, value in record.items():
            t = type(value)
            if t is str:
                continue
            if t is dict:
                _clean_owned(value)  # in place: aws holds the same object
            elif t is list:
                if len(value) == 1:
                    aws[key] = value[0]
            elif value is None:
                if key == "log_info":
                    aws[key] = log_info  # removed None: the wodle's log_info stays
                elif key != "source":
                    del aws[key]
                # dict(record, source=...) overrides even a None: keep the position.
            elif isinstance(value, dict):
                aws[key] = _clean_owned(value)
            elif isinstance(value, list) and len(value) == 1:
                aws[key] = value[0]
    else:
        for key, value in record.items():
            t = type(value)
            if t is str:
                pass
            elif t is dict:
                value = _clean(value)
            elif t is list:
                if len(value) == 1:
                    value = value[0]
            elif value is None:
                if key != "source":
                    continue
                # dict(record, source=...) overrides even a None: keep the position.
            elif isinstance(value, dict):
                value = _clean(value)
            elif isinstance(value, list) and len(value) == 1:
                value = value[0]
            aws[key] = value
    aws["source"] = "cloudtrail"  # in place if the record had one, else appended
    _finish(aws, account_id)
    return {"integration": "aws", "aws": aws}


def _finish(aws: dict[str, Any], account_id: str | None) -> None:
    """Steps 3 (account id) and 5-8 on the cleaned payload, in place: the same
    for the wodle's ``aws`` dict and for a record wrapped in place (whose keys
    are ``aws``'s but for the leading ``log_info``)."""
    get = aws.get
    if account_id is not None:
        aws["aws_account_id"] = account_id

    source_ip = get("sourceIPAddress")
    if isinstance(source_ip, str) and _is_ipv4(source_ip):
        aws["source_ip_address"] = source_ip

    # An absent key reads as _ABSENT, a dict, so it is left alone; a present
    # None (a collapsed [None]) is not a dict and is wrapped, as by the wodle.
    tags = get("tags", _ABSENT)
    if type(tags) is not dict and not isinstance(tags, dict):
        aws["tags"] = {"value": tags}

    for field in _CAST_TO_STRING:
        value = get(field, _ABSENT)
        if type(value) is not dict and not isinstance(value, dict):
            aws[field] = {"string": str(value)}

    params = get("requestParameters")
    if isinstance(params, dict) and type(params.get("disableApiTermination")) is bool:
        # A fresh dict: a collapsed one-element list hands us the caller's object.
        aws["requestParameters"] = {
            **params,
            "disableApiTermination": {"value": params["disableApiTermination"]},
        }

    for member, key, wrapper in POLYMORPHIC_MEMBERS:
        payload = aws.get(member)  # a dict by now, if present
        if payload is not None:
            value = payload.get(key)
            if type(value) in _CONCRETE:
                # A fresh dict, as above; the key keeps its position.
                aws[member] = {**payload, key: {wrapper: value}}


def _is_ipv4(text: str) -> bool:
    """``_IPV4.fullmatch``, remembered: a trail repeats the same few addresses,
    and a dict lookup costs a fifth of the match."""
    if len(text) > _LONGEST_IPV4:
        return False  # service names ("ec2.amazonaws.com") and the like
    known = _ipv4_seen.get(text)
    if known is None:
        if len(_ipv4_seen) >= MAX_REMEMBERED_ADDRESSES:
            _ipv4_seen.clear()
        known = _ipv4_seen[text] = _IPV4.fullmatch(text) is not None
    return known


_LONGEST_IPV4 = len("255.255.255.255")
# Distinct short sourceIPAddress values remembered by _is_ipv4 (~100 bytes each).
MAX_REMEMBERED_ADDRESSES = 4096
_ipv4_seen: dict[str, bool] = {}


def wrap_record(
    record: dict[str, Any],
    *,
    log_file: str,
    bucket: str,
    account_id: str | None,
    account_alias: str = "",
    owned: bool = False,
) -> bytes:
    """Serialise ``record`` as the wodle's message body, compact, UTF-8.

    Args:
        record: one element of ``Records`` as parsed JSON; not modified unless
            ``owned``.
        log_file: the object key relative to the bucket root (``log_info.log_file``).
        bucket: the bucket name (``log_info.s3bucket``).
        account_id: from the S3 key; ``None`` falls back to the record's own ids.
        account_alias: ``log_info.aws_account_alias`` (the wodle's default is "").
        owned: the caller hands over a freshly parsed record it will not use
            again (no shared sub-objects); its nested dicts are cleaned in place.

    Raises:
        EnvelopeError: the record nests too deeply to serialise (bad input).
    """
    log_info = {"aws_account_alias": account_alias, "log_file": log_file, "s3bucket": bucket}
    if owned:
        return _serialise_in_place(record, log_info, _message_head(log_info), account_id)
    return _serialise(record, log_info, account_id, False)


def _message_head(log_info: dict[str, str]) -> bytes:
    """The message's bytes before the record's first key: orjson writes a dict
    as its members in order, so the message is this head, the payload's
    members and two closing braces."""
    return b'{"integration":"aws","aws":{"log_info":' + orjson.dumps(log_info) + b","


class FileWrapper:
    """``wrap_record(owned=True)`` for the records of one file: its
    ``log_info`` is built once and shared by the messages, which are
    serialised at once and never handed out."""

    __slots__ = ("_log_info", "_head", "_account_id", "_account_json")

    def __init__(
        self, *, log_file: str, bucket: str, account_id: str | None, account_alias: str = ""
    ) -> None:
        self._log_info = {
            "aws_account_alias": account_alias,
            "log_file": log_file,
            "s3bucket": bucket,
        }
        self._head = _message_head(self._log_info)
        self._account_id = account_id
        self._account_json = None if account_id is None else orjson.dumps(account_id)

    def wrap_owned(self, record: dict[str, Any]) -> bytes:
        """``record`` (a fresh parse, cleaned in place) as the message body.

        Raises:
            EnvelopeError: as ``wrap_record``.
        """
        return _serialise_in_place(record, self._log_info, self._head, self._account_id)

    def wrap_document(
        self, document: bytes, *, start: int, max_record_bytes: int
    ) -> list[str] | None:
        """The messages of the records of a whole document from index ``start``
        on, as ``wrap_owned`` over ``parse_whole_document``'s records would
        give them (decoded), without a Python object per JSON value; None when
        the document must take that path instead: the C wrapper is not built,
        or the document is invalid, unusual (not ``{"Records": [objects]}`` or
        ``[objects]``, nested deeper than it goes) or holds a record longer than
        ``max_record_bytes`` as written, each of which that path reports.

        Reads the document without the GIL: call it on a worker thread.
        """
        if _native is None:
            return None
        items: list[str | bytes] | None = _native.wrap_records(
            document, self._head, self._account_json, max_record_bytes, start
        )
        if items is None:
            return None
        # Records the C wrapper leaves to Python (a float, a duplicate key...)
        # come back as written; each parses on its own as within the document.
        for i, item in enumerate(items):
            if type(item) is bytes:
                try:
                    items[i] = self.wrap_owned(orjson.loads(item)).decode()
                except (orjson.JSONDecodeError, EnvelopeError):
                    return None  # the whole-document path reports it
        return items  # type: ignore[return-value]  # no bytes left

    def wrap_piece(
        self, piece: bytes, *, start: int, first: bool, max_record_bytes: int
    ) -> tuple[list[str | bytes], int, int, int] | None:
        """``wrap_document`` for a records array read a piece at a time (see
        ``object_stream``): (messages, or records as written for Python to
        wrap; records the piece held; where the next piece starts; status),
        or None without the C wrapper. Releases the GIL."""
        if _native is None:
            return None
        result: tuple[list[str | bytes], int, int, int] = _native.wrap_piece(
            piece, self._head, self._account_json, max_record_bytes, start, first
        )
        return result


def _serialise(
    record: dict[str, Any], log_info: dict[str, str], account_id: str | None, owned: bool
) -> bytes:
    try:
        return orjson.dumps(_message(record, log_info, account_id, owned))
    except (orjson.JSONEncodeError, RecursionError) as exc:
        raise EnvelopeError(f"record {record.get('eventID')!r} cannot be wrapped: {exc}") from exc


def _serialise_in_place(
    record: dict[str, Any], log_info: dict[str, str], head: bytes, account_id: str | None
) -> bytes:
    """``_serialise(owned=True)`` with the record itself as the ``aws`` payload:
    no copy of its keys into a new dict. The payload's members come out of
    ``orjson.dumps(record)`` and are spliced after ``head``; both ways give
    the same bytes, as the differential tests check."""
    if "log_info" in record:
        # The payload's log_info comes first, where the record cannot put it.
        return _serialise(record, log_info, account_id, True)
    event_id = record.get("eventID")  # for the error: cleaning may change it
    if account_id is None:
        account_id = fallback_account_id(record)  # before cleaning, as _message
    # Set first, so cleaning keeps a None "source" where it stands; a value
    # cleaning would change is replaced anyway. Absent: appended, and cleaning
    # only removes keys, so it still ends up after every record key.
    record["source"] = "cloudtrail"
    try:
        _clean_owned(record)
        _finish(record, account_id)
        # Never empty ("source" is in it): "{members}" -> head + "members}" + "}".
        return head + orjson.dumps(record)[1:] + b"}"
    except (orjson.JSONEncodeError, RecursionError) as exc:
        raise EnvelopeError(f"record {event_id!r} cannot be wrapped: {exc}") from exc


@dataclass(frozen=True, slots=True)
class S3Key:
    """The parts of a CloudTrail S3 delivery key
    ``[prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/<name>``."""

    prefix: str  # "" when the key starts at AWSLogs
    org_id: str | None
    account_id: str
    region: str
    date: str  # "YYYY/MM/DD", as in the key
    name: str


def parse_s3_key(key: str) -> S3Key | None:
    """Split a ``/``-separated key that follows the CloudTrail S3 layout, else None.

    Segment-wise, from the right-most ``AWSLogs`` that fits, so a prefix that itself
    contains ``AWSLogs`` still works. Account ids are any digits: sanitised data has
    9- and 13-digit ones.
    """
    segs = key.split("/")
    for i in range(len(segs) - 1, -1, -1):
        if segs[i] != "AWSLogs":
            continue
        rest = segs[i + 1 :]
        org_id = None
        if len(rest) == 8 and rest[0].startswith("o-"):
            org_id, rest = rest[0], rest[1:]
        if len(rest) != 7:
            continue
        account, service, region, year, month, day, name = rest
        if not (
            account.isascii()
            and account.isdigit()
            and service == "CloudTrail"
            and region
            and _is_digits(year, 4)
            and _is_digits(month, 2)
            and _is_digits(day, 2)
            and name
        ):
            continue
        return S3Key(
            prefix="/".join(segs[:i]),
            org_id=org_id,
            account_id=account,
            region=region,
            date=f"{year}/{month}/{day}",
            name=name,
        )
    return None


def _is_digits(text: str, width: int) -> bool:
    return len(text) == width and text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class LogOrigin:
    """Where a file sits, as the wodle's ``log_info`` and ``aws_account_id`` say it."""

    log_file: str  # key relative to the bucket root, "/"-separated
    bucket: str
    account_id: str | None  # None: not the S3 layout; wrap_record falls back per record
    region: str | None


def origin_for(
    path: str | os.PathLike[str], source_dir: str | os.PathLike[str], bucket: str | None = None
) -> LogOrigin:
    """Describe ``path`` (a file below the configured ``source_dir``) for the envelope.

    The source directory plays the bucket root: ``log_file`` is the path below it and
    the bucket name defaults to the directory's own name.

    Raises:
        ValueError: ``path`` is not below ``source_dir`` (the caller's bug).
    """
    root = Path(source_dir).absolute()
    full = Path(path).absolute()
    try:
        rel = full.relative_to(root)
    except ValueError:
        raise ValueError(f"{full} is not below the source directory {root}") from None
    if not rel.parts:
        raise ValueError(f"{full} is the source directory itself, not a file below it")
    key = rel.as_posix()
    parsed = parse_s3_key(key)
    return LogOrigin(
        log_file=key,
        bucket=bucket if bucket is not None else root.name,
        account_id=parsed.account_id if parsed else None,
        region=parsed.region if parsed else None,
    )


def location_for(path: str | os.PathLike[str]) -> str:
    """The event location naming the source file, as logcollector names a file it
    reads (its path). Callers wanting the wodle's constant use ``WODLE_LOCATION``."""
    return os.fspath(path)
