"""encode_request, encode_response and PacketDecoder, without a server."""

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gearman_pool.errors import ProtocolError
from gearman_pool.protocol import (
    ARGUMENT_COUNTS,
    HEADER,
    MAX_PACKET_SIZE,
    REQUEST_MAGIC,
    RESPONSE_MAGIC,
    Packet,
    PacketDecoder,
    PacketType,
    encode_request,
    encode_response,
)

ALL_TYPES = sorted(ARGUMENT_COUNTS)


def sample_args(packet_type):
    """Return distinct arguments for ``packet_type``, with NUL bytes in the last one."""
    count = ARGUMENT_COUNTS[packet_type]
    if count == 0:
        return ()
    args = [f"arg{index}-{packet_type.name}".encode() for index in range(count - 1)]
    args.append(b"last\x00with\x00NUL\xff\x00")
    return tuple(args)


def request_decoder():
    return PacketDecoder(magic=REQUEST_MAGIC)


def test_every_type_has_argument_count():
    assert set(ARGUMENT_COUNTS) == set(PacketType)


@pytest.mark.parametrize("packet_type", ALL_TYPES, ids=lambda t: t.name)
def test_request_round_trip(packet_type):
    args = sample_args(packet_type)
    data = encode_request(packet_type, *args)

    assert data[:4] == REQUEST_MAGIC
    assert struct.unpack("!I", data[4:8])[0] == packet_type.value
    assert struct.unpack("!I", data[8:12])[0] == len(data) - HEADER.size
    assert request_decoder().feed(data) == [Packet(packet_type, args)]


@pytest.mark.parametrize("packet_type", ALL_TYPES, ids=lambda t: t.name)
def test_response_round_trip(packet_type):
    args = sample_args(packet_type)
    data = encode_response(packet_type, *args)

    assert data[:4] == RESPONSE_MAGIC
    assert PacketDecoder().feed(data) == [Packet(packet_type, args)]


@pytest.mark.parametrize("packet_type", ALL_TYPES, ids=lambda t: t.name)
def test_round_trip_empty_arguments(packet_type):
    args = (b"",) * ARGUMENT_COUNTS[packet_type]

    packets = PacketDecoder().feed(encode_response(packet_type, *args))

    assert packets == [Packet(packet_type, args)]


def test_decoded_type_is_enum():
    packet = PacketDecoder().feed(encode_response(PacketType.NOOP))[0]

    assert packet.type is PacketType.NOOP
    assert packet.args == ()


def test_response_decoder_rejects_request_magic():
    with pytest.raises(ProtocolError, match="magic"):
        PacketDecoder().feed(encode_request(PacketType.NOOP))


def test_encode_keeps_nul_in_last_argument():
    data = encode_request(PacketType.SUBMIT_JOB, b"task", b"unique", b"\x00a\x00b\x00")

    packet = request_decoder().feed(data)[0]

    assert packet.args == (b"task", b"unique", b"\x00a\x00b\x00")


@pytest.mark.parametrize("position", [0, 1])
def test_encode_rejects_nul_in_earlier_argument(position):
    args = [b"task", b"unique", b"data"]
    args[position] = b"bad\x00name"

    with pytest.raises(ValueError, match="NUL"):
        encode_request(PacketType.SUBMIT_JOB, *args)


def test_encode_rejects_wrong_argument_count():
    with pytest.raises(ValueError, match="takes 3 arguments, got 2"):
        encode_request(PacketType.SUBMIT_JOB, b"task", b"unique")


def test_encode_rejects_text_argument():
    with pytest.raises(TypeError, match="must be bytes, got str"):
        encode_request(PacketType.CAN_DO, "task")


def test_encode_accepts_bytearray_and_memoryview():
    data = encode_request(PacketType.SUBMIT_JOB, bytearray(b"task"), memoryview(b"unique"), b"data")

    assert request_decoder().feed(data)[0].args == (b"task", b"unique", b"data")


def test_split_at_every_byte_boundary():
    args = (b"H:vm:7", b"task", b"unique", b"data\x00more")
    data = encode_response(PacketType.JOB_ASSIGN_UNIQ, *args)
    expected = [Packet(PacketType.JOB_ASSIGN_UNIQ, args)]

    for split in range(len(data) + 1):
        decoder = PacketDecoder()

        first = decoder.feed(data[:split])
        second = decoder.feed(data[split:])

        assert first + second == expected, f"split at byte {split}"
        assert decoder.buffered == 0


def test_byte_by_byte_feed():
    data = encode_response(PacketType.WORK_COMPLETE, b"H:vm:1", b"result\x00bytes")
    decoder = PacketDecoder()

    packets = []
    for index in range(len(data)):
        packets += decoder.feed(data[index : index + 1])

    assert packets == [Packet(PacketType.WORK_COMPLETE, (b"H:vm:1", b"result\x00bytes"))]


def test_several_packets_in_one_feed():
    data = (
        encode_response(PacketType.NOOP)
        + encode_response(PacketType.JOB_CREATED, b"H:vm:1")
        + encode_response(PacketType.WORK_DATA, b"H:vm:1", b"partial")
        + encode_response(PacketType.WORK_COMPLETE, b"H:vm:1", b"")
        + encode_response(PacketType.NO_JOB)
    )

    packets = PacketDecoder().feed(data)

    assert packets == [
        Packet(PacketType.NOOP, ()),
        Packet(PacketType.JOB_CREATED, (b"H:vm:1",)),
        Packet(PacketType.WORK_DATA, (b"H:vm:1", b"partial")),
        Packet(PacketType.WORK_COMPLETE, (b"H:vm:1", b"")),
        Packet(PacketType.NO_JOB, ()),
    ]


def test_partial_packet_stays_buffered():
    data = encode_response(PacketType.NOOP) + encode_response(PacketType.ECHO_RES, b"ping")
    decoder = PacketDecoder()

    assert decoder.feed(data[:-2]) == [Packet(PacketType.NOOP, ())]
    assert decoder.feed(data[-2:]) == [Packet(PacketType.ECHO_RES, (b"ping",))]
    assert decoder.feed(b"") == []


@pytest.mark.parametrize("magic", [b"\x00RQE", b"XRES", b"\x00res", b"\x00\x00\x00\x00"])
def test_wrong_magic(magic):
    data = HEADER.pack(magic, PacketType.NOOP, 0)

    with pytest.raises(ProtocolError, match="magic") as info:
        PacketDecoder().feed(data)

    assert repr(magic) in str(info.value)


@pytest.mark.parametrize("type_number", [0, 5, 35, 2**32 - 1])
def test_unknown_type(type_number):
    data = HEADER.pack(RESPONSE_MAGIC, type_number, 0)

    with pytest.raises(ProtocolError, match=f"unknown packet type {type_number}"):
        PacketDecoder().feed(data)


@pytest.mark.parametrize("size", [MAX_PACKET_SIZE + 1, 2**32 - 1])
def test_oversized_packet_rejected_without_allocation(size):
    header = HEADER.pack(RESPONSE_MAGIC, PacketType.WORK_COMPLETE, size)
    decoder = PacketDecoder()

    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="above the") as info:
            decoder.feed(header + b"H:vm:1\x00")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert str(size) in str(info.value)
    assert peak < 1024 * 1024
    assert decoder.buffered < 1024


def test_max_size_packet_header_accepted():
    header = HEADER.pack(RESPONSE_MAGIC, PacketType.WORK_COMPLETE, MAX_PACKET_SIZE)
    decoder = PacketDecoder()

    assert decoder.feed(header) == []


def test_custom_max_size():
    decoder = PacketDecoder(max_size=10)
    data = encode_response(PacketType.ECHO_RES, b"x" * 11)

    with pytest.raises(ProtocolError, match="11 bytes, above the 10-byte limit"):
        decoder.feed(data)


def test_work_fail_trailing_nul():
    # gearmand 1.1.20 sends this when it turns a WORK_EXCEPTION into a WORK_FAIL for a
    # client that did not enable the "exceptions" option.
    data = HEADER.pack(RESPONSE_MAGIC, PacketType.WORK_FAIL, 7) + b"H:vm:2\x00"

    packets = PacketDecoder().feed(data)

    assert len(packets) == 1
    assert packets[0].type is PacketType.WORK_FAIL
    assert packets[0].args[0].rstrip(b"\x00") == b"H:vm:2"


def test_missing_trailing_arguments_padded():
    # A STATUS_RES truncated after the handle: every declared argument can still be indexed.
    data = HEADER.pack(RESPONSE_MAGIC, PacketType.STATUS_RES, 6) + b"H:vm:3"

    packet = PacketDecoder().feed(data)[0]

    assert packet.args == (b"H:vm:3", b"", b"", b"", b"")


def chunked(data, cuts):
    """Split ``data`` at the positions in ``cuts`` (taken modulo its length)."""
    positions = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces = []
    start = 0
    for position in positions:
        pieces.append(data[start:position])
        start = position
    pieces.append(data[start:])
    return pieces


@st.composite
def packets_with_args(draw):
    packet_type = draw(st.sampled_from(ALL_TYPES))
    count = ARGUMENT_COUNTS[packet_type]
    no_nul = st.binary(max_size=40).map(lambda value: value.replace(b"\x00", b""))
    args = [draw(no_nul) for _ in range(max(0, count - 1))]
    if count:
        args.append(draw(st.binary(max_size=200)))
    return packet_type, tuple(args)


@given(
    packets=st.lists(packets_with_args(), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
@settings(max_examples=300, deadline=None)
def test_property_round_trip_any_chunking(packets, cuts):
    data = b"".join(encode_request(packet_type, *args) for packet_type, args in packets)
    decoder = request_decoder()

    decoded = []
    for piece in chunked(data, cuts):
        decoded += decoder.feed(piece)

    assert decoded == [Packet(packet_type, args) for packet_type, args in packets]
    assert decoder.buffered == 0


garbage = st.one_of(
    st.binary(max_size=300),
    # Start with a valid magic, so the decoder gets past the first check.
    st.binary(max_size=300).map(lambda tail: RESPONSE_MAGIC + tail),
    # A valid header followed by garbage payload and maybe more headers.
    st.tuples(
        st.integers(min_value=0, max_value=40),
        st.integers(min_value=0, max_value=64),
        st.binary(max_size=300),
    ).map(lambda parts: HEADER.pack(RESPONSE_MAGIC, parts[0], parts[1]) + parts[2]),
)


@given(data=garbage, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=10))
@settings(max_examples=500, deadline=None)
def test_garbage_yields_packets_or_error(data, cuts):
    decoder = PacketDecoder()

    try:
        for piece in chunked(data, cuts):
            for packet in decoder.feed(piece):
                assert isinstance(packet.type, PacketType)
                assert len(packet.args) == ARGUMENT_COUNTS[packet.type]
                assert all(isinstance(arg, bytes) for arg in packet.args)
    except ProtocolError:
        pass
