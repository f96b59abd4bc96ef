# The C wrapper built from _envelope.c (see FileWrapper.wrap_document).
def wrap_records(
    document: bytes, head: bytes, account: bytes | None, max_record_bytes: int, start: int, /
) -> list[str | bytes] | None: ...
def wrap_piece(
    piece: bytes,
    head: bytes,
    account: bytes | None,
    max_record_bytes: int,
    start: int,
    first: bool,
    /,
) -> tuple[list[str | bytes], int, int, int]: ...
