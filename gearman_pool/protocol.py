"""The Gearman binary protocol: packet types, request encoding and response decoding.

A packet is a 12-byte header (4-byte magic, 4-byte type, 4-byte payload size, both
big-endian) followed by the payload: the packet's arguments joined by NUL bytes. Only the
last argument may contain NUL bytes, so decoding needs each type's argument count.
Everything here is bytes; text is encoded and decoded by the callers.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from gearman_pool.errors import ProtocolError

REQUEST_MAGIC = b"\x00REQ"
RESPONSE_MAGIC = b"\x00RES"
HEADER = struct.Struct("!4sII")

# Upper bound on one packet's payload. A declared size above it is treated as corrupt
# input, so a hostile or broken peer cannot make a reader buffer gigabytes.
MAX_PACKET_SIZE = 128 * 1024 * 1024


class PacketType(enum.IntEnum):
    CAN_DO = 1
    CANT_DO = 2
    RESET_ABILITIES = 3
    PRE_SLEEP = 4
    NOOP = 6
    SUBMIT_JOB = 7
    JOB_CREATED = 8
    GRAB_JOB = 9
    NO_JOB = 10
    JOB_ASSIGN = 11
    WORK_STATUS = 12
    WORK_COMPLETE = 13
    WORK_FAIL = 14
    GET_STATUS = 15
    ECHO_REQ = 16
    ECHO_RES = 17
    SUBMIT_JOB_BG = 18
    ERROR = 19
    STATUS_RES = 20
    SUBMIT_JOB_HIGH = 21
    SET_CLIENT_ID = 22
    CAN_DO_TIMEOUT = 23
    ALL_YOURS = 24
    WORK_EXCEPTION = 25
    OPTION_REQ = 26
    OPTION_RES = 27
    WORK_DATA = 28
    WORK_WARNING = 29
    GRAB_JOB_UNIQ = 30
    JOB_ASSIGN_UNIQ = 31
    SUBMIT_JOB_HIGH_BG = 32
    SUBMIT_JOB_LOW = 33
    SUBMIT_JOB_LOW_BG = 34


# How many NUL-separated arguments each packet type carries.
ARGUMENT_COUNTS = {
    PacketType.CAN_DO: 1,
    PacketType.CANT_DO: 1,
    PacketType.RESET_ABILITIES: 0,
    PacketType.PRE_SLEEP: 0,
    PacketType.NOOP: 0,
    PacketType.SUBMIT_JOB: 3,
    PacketType.JOB_CREATED: 1,
    PacketType.GRAB_JOB: 0,
    PacketType.NO_JOB: 0,
    PacketType.JOB_ASSIGN: 3,
    PacketType.WORK_STATUS: 3,
    PacketType.WORK_COMPLETE: 2,
    PacketType.WORK_FAIL: 1,
    PacketType.GET_STATUS: 1,
    PacketType.ECHO_REQ: 1,
    PacketType.ECHO_RES: 1,
    PacketType.SUBMIT_JOB_BG: 3,
    PacketType.ERROR: 2,
    PacketType.STATUS_RES: 5,
    PacketType.SUBMIT_JOB_HIGH: 3,
    PacketType.SET_CLIENT_ID: 1,
    PacketType.CAN_DO_TIMEOUT: 2,
    PacketType.ALL_YOURS: 0,
    PacketType.WORK_EXCEPTION: 2,
    PacketType.OPTION_REQ: 1,
    PacketType.OPTION_RES: 1,
    PacketType.WORK_DATA: 2,
    PacketType.WORK_WARNING: 2,
    PacketType.GRAB_JOB_UNIQ: 0,
    PacketType.JOB_ASSIGN_UNIQ: 4,
    PacketType.SUBMIT_JOB_HIGH_BG: 3,
    PacketType.SUBMIT_JOB_LOW: 3,
    PacketType.SUBMIT_JOB_LOW_BG: 3,
}

# SUBMIT_JOB variants by (priority, background).
SUBMIT_TYPES = {
    ("high", False): PacketType.SUBMIT_JOB_HIGH,
    ("high", True): PacketType.SUBMIT_JOB_HIGH_BG,
    ("normal", False): PacketType.SUBMIT_JOB,
    ("normal", True): PacketType.SUBMIT_JOB_BG,
    ("low", False): PacketType.SUBMIT_JOB_LOW,
    ("low", True): PacketType.SUBMIT_JOB_LOW_BG,
}
PRIORITIES = ("high", "normal", "low")


class Packet(NamedTuple):
    type: PacketType
    args: tuple[bytes, ...]


def encode_request(packet_type: PacketType, *args: bytes) -> bytes:
    """Encode a request packet.

    Every argument but the last must be free of NUL bytes, because NUL separates them.
    """
    expected = ARGUMENT_COUNTS[packet_type]
    if len(args) != expected:
        raise ValueError(f"{packet_type.name} takes {expected} arguments, got {len(args)}")
    for arg in args:
        if not isinstance(arg, (bytes, bytearray, memoryview)):
            raise TypeError(f"{packet_type.name} arguments must be bytes, got {type(arg).__name__}")
    for arg in args[:-1]:
        if b"\x00" in arg:
            raise ValueError(f"{packet_type.name} argument {bytes(arg)!r} contains a NUL byte")
    payload = b"\x00".join(bytes(arg) for arg in args)
    if len(payload) > MAX_PACKET_SIZE:
        raise ValueError(f"{packet_type.name} payload of {len(payload)} bytes exceeds the {MAX_PACKET_SIZE}-byte limit")
    return HEADER.pack(REQUEST_MAGIC, packet_type, len(payload)) + payload


def encode_response(packet_type: PacketType, *args: bytes) -> bytes:
    """Encode a response packet, as a server sends it; used by test servers."""
    payload = b"\x00".join(args)
    return HEADER.pack(RESPONSE_MAGIC, packet_type, len(payload)) + payload


def split_arguments(packet_type: PacketType, payload: bytes) -> tuple[bytes, ...]:
    count = ARGUMENT_COUNTS[packet_type]
    if count == 0:
        return ()
    args = payload.split(b"\x00", count - 1)
    if len(args) < count:
        # gearmand sends WORK_FAIL and a few others with trailing fields missing or
        # extra; pad so callers can index every declared argument.
        args.extend([b""] * (count - len(args)))
    return tuple(args)


class PacketDecoder:
    """Incremental decoder of response packets from a byte stream.

    ``feed()`` takes whatever bytes arrived and returns the packets they complete. It
    raises ProtocolError on a wrong magic, an unknown type or an oversized packet. The
    stream cannot be resynchronised after that, so the caller must drop the connection.
    """

    def __init__(self, magic: bytes = RESPONSE_MAGIC, max_size: int = MAX_PACKET_SIZE):
        self._magic = magic
        self._max_size = max_size
        self._buffer = bytearray()
        self._pending_header: tuple[PacketType, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets = []
        while True:
            packet = self._next_packet()
            if packet is None:
                return packets
            packets.append(packet)

    def _next_packet(self) -> Packet | None:
        if self._pending_header is None:
            if len(self._buffer) < HEADER.size:
                return None
            magic, type_number, size = HEADER.unpack_from(self._buffer)
            if magic != self._magic:
                raise ProtocolError(f"bad packet magic {bytes(magic)!r}, expected {self._magic!r}")
            try:
                packet_type = PacketType(type_number)
            except ValueError:
                raise ProtocolError(f"unknown packet type {type_number}") from None
            if size > self._max_size:
                raise ProtocolError(
                    f"{packet_type.name} packet declares {size} bytes, above the {self._max_size}-byte limit"
                )
            del self._buffer[: HEADER.size]
            self._pending_header = (packet_type, size)

        packet_type, size = self._pending_header
        if len(self._buffer) < size:
            return None
        payload = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._pending_header = None
        return Packet(packet_type, split_arguments(packet_type, payload))
