"""The one encoding of job data and job results as the bytes that go over the wire."""

from __future__ import annotations

import json


def encode_value(value) -> bytes:
    """Encode job data or a ``do_job`` result as bytes.

    None becomes b"", bytes, bytearray and memoryview are copied as they are, and str is
    encoded as UTF-8. Anything else becomes UTF-8 JSON written by DjangoJSONEncoder with
    ensure_ascii=False, so dates, times, Decimals and UUIDs work.
    """
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    # Imported here because django.core.serializers imports django.db, which
    # gearman_pool.submit must not load at import time.
    from django.core.serializers.json import DjangoJSONEncoder

    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False).encode("utf-8")
