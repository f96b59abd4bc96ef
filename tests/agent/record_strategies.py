"""Hypothesis strategies for CloudTrail-like records drawn around what the
envelope treats specially: its own keys, the cast and polymorphic members,
None, one-element lists (of None too), nesting."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
KEYS = st.sampled_from(
    [
        "tags",
        "requestParameters",
        "responseElements",
        "additionalEventData",
        "source",
        "sourceIPAddress",
        "disableApiTermination",
        "role",
        "log_info",
        "aws_account_id",
        "source_ip_address",
        "recipientAccountId",
        "userIdentity",
        "accountId",
        "eventID",
        "a",
        "b",
    ]
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=24,
)


def records(max_keys: int) -> st.SearchStrategy[dict[str, Any]]:
    """Top-level records of at most ``max_keys`` members."""
    return st.dictionaries(KEYS, JSON_VALUES, max_size=max_keys)
