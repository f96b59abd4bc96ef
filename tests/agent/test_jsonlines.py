"""Append-only JSON-lines reader on real files that grow, shrink and misbehave."""

from __future__ import annotations

from pathlib import Path

import pytest

from trailwarden.agent.jsonlines import JsonLinesReader, Line, LineProblem, LineProblemKind


def lines_of(items: list[Line | LineProblem]) -> list[bytes]:
    return [i.raw for i in items if isinstance(i, Line)]


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_complete_lines_with_offsets_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    data = b'{"a":1}\n{"b":2}\r\n\n  \r\n{"c":"\xea\xb2\xb0"}\n'
    path.write_bytes(data)
    items = list(JsonLinesReader(str(path)).read())
    assert all(isinstance(i, Line) for i in items)
    assert [(i.start, i.end, i.raw) for i in items] == [  # type: ignore[union-attr]
        (0, 8, b'{"a":1}'),
        (8, 17, b'{"b":2}'),
        (22, len(data), '{"c":"결"}'.encode()),
    ]


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    reader = JsonLinesReader(str(path))
    assert lines_of(list(reader.read())) == [b'{"a":1}']
    assert reader.offset == 8
    assert list(reader.read()) == []
    append(path, b"2}")
    assert list(reader.read()) == []
    append(path, b"\n{")
    items = list(reader.read())
    assert [(i.start, i.raw) for i in items] == [(8, b'{"b":2}')]  # type: ignore[union-attr]
    assert reader.offset == 16


def test_resume_from_a_delivered_line_end(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(10)))
    first = [i for i in JsonLinesReader(str(path)).read() if isinstance(i, Line)]
    resumed = list(JsonLinesReader(str(path), offset=first[3].end).read())
    assert lines_of(resumed) == [b'{"n":%d}' % i for i in range(4, 10)]


def test_stopping_early_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(6)))
    reader = JsonLinesReader(str(path), chunk_bytes=1 << 16)
    seen: list[bytes] = []
    for _ in range(6):
        for item in reader.read():
            assert isinstance(item, Line)
            seen.append(item.raw)
            break  # take one line per call
    assert seen == [b'{"n":%d}' % i for i in range(6)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 64, 4096])
def test_any_chunk_size_gives_the_same_lines(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "ct.jsonl"
    data = b"".join(b'{"n":%d,"pad":"%s"}\r\n' % (i, b"x" * i) for i in range(30))
    path.write_bytes(data)
    reference = list(JsonLinesReader(str(path)).read())
    assert list(JsonLinesReader(str(path), chunk_bytes=chunk).read()) == reference
    assert len(reference) == 30


def test_truncation_is_reported_and_reading_restarts(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n')
    reader = JsonLinesReader(str(path))
    assert len(list(reader.read())) == 2
    path.write_bytes(b'{"z":9}\n')  # copytruncate, then a new line
    items = list(reader.read())
    assert isinstance(items[0], LineProblem) and items[0].kind is LineProblemKind.TRUNCATED
    assert "shorter than the read offset 16" in str(items[0])
    assert lines_of(items) == [b'{"z":9}']
    assert reader.offset == 8


def test_oversized_complete_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b'{"a":1}\n{"big":"' + b"x" * 5000 + b'"}\n{"b":2}\n')
    for chunk in (7, 100, 1 << 16):
        reader = JsonLinesReader(str(path), max_line_bytes=1000, chunk_bytes=chunk)
        items = list(reader.read())
        problems = [i for i in items if isinstance(i, LineProblem)]
        assert lines_of(items) == [b'{"a":1}', b'{"b":2}']
        assert [(p.kind, p.offset) for p in problems] == [(LineProblemKind.OVERSIZED_LINE, 8)]
        assert reader.peak_buffered_bytes <= 1000 + chunk


def test_oversized_growing_line_is_reported_once_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "ct.jsonl"
    path.write_bytes(b'{"a":1}\n' + b"y" * 3000)
    reader = JsonLinesReader(str(path), max_line_bytes=1000, chunk_bytes=256)
    items = list(reader.read())
    assert lines_of(items) == [b'{"a":1}']
    assert [p.kind for p in items if isinstance(p, LineProblem)] == [LineProblemKind.OVERSIZED_LINE]
    assert reader.discarding and reader.offset == 3008
    append(path, b"y" * 3000)
    assert list(reader.read()) == []  # still the same line: not reported again
    append(path, b'yyy\n{"b":2}\n')
    assert lines_of(list(reader.read())) == [b'{"b":2}']
    assert not reader.discarding
    assert reader.peak_buffered_bytes <= 1000


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="offset"):
        JsonLinesReader(str(tmp_path / "x"), offset=-1)
    with pytest.raises(ValueError, match="positive"):
        JsonLinesReader(str(tmp_path / "x"), max_line_bytes=0)


def test_final_read_takes_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\r')
    reader = JsonLinesReader(str(path))
    assert lines_of(list(reader.read())) == [b'{"a":1}']
    items = list(reader.read(final=True))
    assert [(i.start, i.end, i.raw) for i in items] == [(8, 16, b'{"b":2}')]  # type: ignore[union-attr]
    assert reader.offset == 16
    assert list(reader.read(final=True)) == []
