"""Hostile input on every RPC: each answer's status and message, and what it stored.

    .venv/bin/python bench/fuzz.py [--calls 200] [--seed 0]       # starts the local cluster
    .venv/bin/python bench/fuzz.py --quick                         # 25 + 8 calls per method (≈ 2 min)
    .venv/bin/python bench/fuzz.py --quick --tls                   # the local cluster with TLS and tokens
    .venv/bin/python bench/fuzz.py --target HOST:PORT [--shard HOST:PORT ...] [--encoder HOST:PORT]
        [--tls-ca PEM --token-file FILE --tls-cert PEM --tls-key PEM ...]   # a running (secured) cluster

For every method of the Gateway (and of the Encoder and each IndexShard: the local cluster's, or
those given) it sends ``--calls`` requests built from the proto's own descriptors. Each field is
set or not at random, with values chosen to break things (empty, huge, NaN and ±inf, negative and
out-of-range numbers, unknown enum values, timestamps outside 0001..9999, NUL, control and
right-to-left text, lists far over the limits, truncated, corrupted and oversized images, codes of
the wrong length) mixed with valid ones (real images in each format, codes of the served length,
stored ids, the served model version), so that calls get past the first check. ``--raw`` more per
method send a valid message's bytes mutated at random (invalid UTF-8, broken lengths: what the
proto cannot build). Some calls also carry hostile metadata: a shard's write limit
(``orbithash-not-after``) that is NaN, infinite, garbage or long past, unknown keys, odd text and
binary values, and write request ids, fresh or malformed. Nothing runs concurrently: each answer
is checked against the state before it.

On a cluster with tokens (``--tls``, or ``--token-file``), ``--probes`` more calls per gateway
method carry a credential that must be refused: no token, one that is not ``Bearer``, an unknown
one, two ``authorization`` values, or a token whose role is too low (``--reader-token-file``,
``--writer-token-file``). With a stranger's certificate (``--tls``, or ``--stranger-cert``: one of
the cluster's CA that is not the gateway's) each internal method gets such probes too. A probe must
get exactly UNAUTHENTICATED or PERMISSION_DENIED, never echo the token it presented, and change
nothing.

Checks, each a violation when it fails:
  status   one a caller can act on: OK, INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
           RESOURCE_EXHAUSTED or OUT_OF_RANGE (DEADLINE_EXCEEDED too when the call carried a write limit
           that had passed). UNKNOWN and INTERNAL are unhandled errors, UNAVAILABLE and
           DEADLINE_EXCEEDED a crash or a hang, UNIMPLEMENTED a missing method
  message  every refusal says why: a message of 1..2000 characters, without a Python traceback or
           the repr of an internal object
  stored   the item count after a write differs from before by exactly what the reply says
           (ingested − replaced, added − replaced, −deleted); a refused write changes nothing
  hits     at most k per query, one result per query, ascending by distance (by score when
           re-ranked), within max_distance and of the label asked for
  alive    after each method every process answers: gateway Info with every shard healthy,
           each service's health check SERVING
Every id it can have written starts with ``--id-prefix``, or is recorded from the request the
service accepted, and is deleted where it was written at the end, so the cluster keeps the items
it had (the count is checked). Prints violations with examples, tables of statuses by method (calls,
probes) and a final JSON line (``violations``, ``calls``, ``by_method``, ``probes``, ``examples``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import struct
import sys
import tempfile
import time
import traceback
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import descriptor as d
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from end_to_end import ingest

from gateway.replay import REQUEST_ID_KEY
from gateway.roles import METHOD_ROLES
from gateway.servicer import INGEST_SUMMARY_KEY
from orbithash.data import Split, load_split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_local.cluster import Cluster, ClusterConfig, grpc_serving
from orbithash_serving.access import Role
from orbithash_serving.deadlines import NOT_AFTER_KEY
from orbithash_serving.tls import channel_credentials

REPO = Path(__file__).resolve().parents[1]
ACCEPTABLE = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"}
DEADLINE_S = 60.0
MAX_MESSAGE_CHARS = 2000
LEAKS = ("Traceback", "object at 0x", "Exception calling application")  # internals, not a reason a caller can act on
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 256 * 2**20), ("grpc.max_receive_message_length", 256 * 2**20)]
WRITES = {("Gateway", "Ingest"), ("Gateway", "Delete"), ("Gateway", "UpdateMetadata"),
          ("IndexShard", "Add"), ("IndexShard", "Delete"), ("IndexShard", "UpdateMetadata")}

# Text that breaks naive handling: control characters, NUL, right-to-left marks, combining marks,
# astral characters, path and format syntax, whitespace only, and long runs.
NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\t\n\r", "\u202eevil", "e\u0301", "\U0001f6f0", "../../etc/passwd",
              "%s%n%x", "{0}", "'; DROP TABLE x; --", "*", "?", "[", "\\", "\ufeff", "\uffff", "a" * 257,
              "é" * 200, "x" * 70_000]


@dataclass
class Context:
    """What valid looks like on this cluster: what the generator mixes in so calls get past the first check."""

    bits: int
    version: str
    classes: int
    stored_ids: list[str]
    images: list[bytes]         # valid: real images in each format and size the encoder reads
    broken_images: list[bytes]  # truncated, corrupted, unsupported, bombs
    prefix: str


@dataclass
class Tally:
    by_method: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    reasons: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # refusals' messages
    probes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # credentials refused
    violations: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def violation(self, kind: str, example: str) -> None:
        self.violations[kind] += 1
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(example[:400])


@dataclass(frozen=True)
class Access:
    """How the fuzzer reaches a cluster: plaintext, or TLS with an admin token for the gateway (the
    fuzzer deletes what it wrote) and a certificate the internal services admit (the gateway's).

    The probes of identity use the rest: tokens of lower roles, and a certificate of the cluster
    that the internal services must refuse."""

    gateway: grpc.ChannelCredentials | None = None
    internal: grpc.ChannelCredentials | None = None
    token: str | None = None
    role_tokens: dict[str, str] = field(default_factory=dict)  # role label → token
    stranger: grpc.ChannelCredentials | None = None

    def credentials(self, target: Target) -> grpc.ChannelCredentials | None:
        return self.gateway if target.service == "Gateway" else self.internal

    def channel(self, target: Target, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        credentials = credentials or self.credentials(target)
        if credentials is None:
            return grpc.insecure_channel(target.address, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(target.address, credentials, options=CHANNEL_OPTIONS)

    def metadata(self, target: Target) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token and target.service == "Gateway" else []


def access_of(cluster: Cluster) -> Access:
    """The local cluster's: its CA, the gateway's certificate, its three tokens, the operator's
    certificate as the stranger (plaintext when it runs without --tls)."""
    if cluster.security is None:
        return Access()
    sec = cluster.security
    ca = str(sec.ca)
    me, stranger = sec.identity("gateway"), sec.identity("client")
    tokens = {role: path.read_text().strip() for role, path in sec.token_files.items()}
    return Access(channel_credentials(ca), channel_credentials(ca, str(me.cert), str(me.key)), tokens.pop("admin"),
                  tokens, channel_credentials(ca, str(stranger.cert), str(stranger.key)))


def access_from(args: argparse.Namespace) -> Access:
    """A running cluster's, from the command line: files only, never a token as an argument."""
    def read(path: Path | None) -> str | None:
        return path.read_text().strip() if path else None

    if args.tls_ca is None:
        return Access()
    ca = str(args.tls_ca)
    cert = (str(args.tls_cert), str(args.tls_key)) if args.tls_cert else (None, None)
    stranger = (channel_credentials(ca, str(args.stranger_cert), str(args.stranger_key))
                if args.stranger_cert else None)
    roles = {label: read(path) for label, path in (("reader", args.reader_token_file),
                                                   ("writer", args.writer_token_file)) if path}
    return Access(channel_credentials(ca), channel_credentials(ca, *cert), read(args.token_file), roles, stranger)


# -- images -----------------------------------------------------------------------------------------

def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` RGB pixels, with one tiny IDAT (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def image_pool(real: list[bytes], rng: random.Random) -> tuple[list[bytes], list[bytes]]:
    """Real images in each format and size the encoder reads, and broken or hostile ones."""
    with Image.open(io.BytesIO(real[0])) as first:
        rgb = first.convert("RGB")
    valid = [*real[:3], _encode(rgb, "JPEG", quality=90), _encode(rgb, "PNG"), _encode(rgb, "JPEG", progressive=True),
             _encode(rgb.convert("L"), "PNG"), _encode(rgb.convert("RGBA"), "PNG"), _encode(rgb.convert("P"), "PNG"),
             _encode(Image.new("RGB", (1, 1)), "PNG"), _encode(Image.new("RGB", (3000, 7)), "JPEG"),
             _encode(Image.fromarray(np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)), "PNG"),
             _encode(rgb, "TIFF")]
    data = real[0]
    broken = [b"", b"\x00", data[: len(data) // 2], data[:64], bytes(rng.randrange(256) for _ in range(2048)),
              _png_claiming(100_000, 100_000), _png_claiming(7000, 7000), _png_claiming(0, 5),
              b"GIF89a" + bytes(100), _encode(rgb, "BMP"), b"II*\x00" + bytes(64), b"\xff\xd8\xff" + bytes(200),
              b"\xff\xd8" + b"\xff\xda" * 200]
    flipped = bytearray(valid[3])
    for _ in range(20):
        flipped[rng.randrange(100, len(flipped))] ^= 0xFF
    return valid, [*broken, bytes(flipped)]


# -- messages from the descriptors ----------------------------------------------------------------

class Generator:
    """Random messages of a descriptor, valid values and hostile ones mixed (see the module's doc).

    Most requests are plausible: each value valid for its field except about one in twelve, so a
    call passes the first checks and a single bad value meets the code behind them. The others are
    wild: most values hostile."""

    PLAUSIBLE, WILD = 0.08, 0.6  # the chance that a value is hostile

    def __init__(self, ctx: Context, rng: random.Random, writes: bool) -> None:
        self.ctx = ctx
        self.rng = rng
        self.writes = writes  # ids go to a write: only the fuzzer's own (prefixed) or nonsense ones
        self.ids_used: set[str] = set()
        self.hostile_rate = self.PLAUSIBLE
        self.deadline = True  # whether the call is sent with a deadline (``metadata`` may take it away)

    def hostile(self) -> bool:
        return self.rng.random() < self.hostile_rate

    def message(self, desc: d.Descriptor, depth: int = 0) -> Message:
        if depth == 0:
            self.hostile_rate = self.PLAUSIBLE if self.rng.random() < 0.7 else self.WILD
        msg = GetMessageClass(desc)()
        chosen: dict[str, d.FieldDescriptor] = {}
        wild = self.hostile_rate == self.WILD
        for oneof in desc.oneofs:  # a real oneof, or a proto3 `optional` field's own ("_label")
            if self.rng.random() < (0.4 if oneof.name.startswith("_") else 0.9 if wild else 1.0):
                chosen[oneof.name] = self.rng.choice(oneof.fields)
        for f in desc.fields:
            oneof = f.containing_oneof
            if oneof is not None and chosen.get(oneof.name) is not f:
                continue
            # Plausible requests leave out only what is optional by nature: flags and nested messages.
            optional = f.type == d.FieldDescriptor.TYPE_BOOL or (f.message_type is not None and not f.is_repeated)
            if oneof is None and self.rng.random() < (0.35 if wild else 0.4 if optional else 0.0):
                continue  # unset
            self._set(msg, f, depth)
        return msg

    def _set(self, msg: Message, f: d.FieldDescriptor, depth: int) -> None:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            for _ in range(self._count(heavy=False)):
                target[self.scalar(key_f, "key")] = self.scalar(value_f, "value")
            return
        if f.is_repeated:
            target = getattr(msg, f.name)
            n = self._count(heavy=f.message_type is not None or f.type == d.FieldDescriptor.TYPE_BYTES)
            if f.message_type is not None:
                for _ in range(n if depth < 3 else 0):
                    target.append(self.message(f.message_type, depth + 1))
            elif f.name == "u" and not self.hostile():
                target.extend(self.rng.gauss(0, 1) for _ in range(self.ctx.bits))
            else:
                target.extend(self.scalar(f, f.name) for _ in range(n))
            return
        if f.message_type is not None:
            if depth < 3:
                getattr(msg, f.name).CopyFrom(self.message(f.message_type, depth + 1))
            return
        setattr(msg, f.name, self.scalar(f, f.name))

    def _count(self, heavy: bool) -> int:
        """How many elements a list gets: a few, or when hostile far over the services' limits
        (messages and byte strings up to 300, so a request stays far below the 256 MB send limit)."""
        if not self.hostile():
            return self.rng.randint(1, 4)
        return self.rng.choice([0, 33, 300] if heavy else [0, 33, 300, 3000])

    def scalar(self, f: d.FieldDescriptor, name: str) -> object:
        t = f.type
        if t == d.FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if t == d.FieldDescriptor.TYPE_STRING:
            return self.text(name)
        if t == d.FieldDescriptor.TYPE_BYTES:
            return self.blob(name)
        if not self.hostile():
            return self.valid_number(f, name)
        if t in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
            return self.rng.choice([0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, -1e-308, 3.4e38, 90.0000001,
                                    -90.5, 180.0000001, -181.0, self.rng.uniform(-1e6, 1e6)])
        if t == d.FieldDescriptor.TYPE_ENUM:
            return self.rng.choice([99, -5])
        lo, hi = {d.FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
                  d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1)}.get(t, (-2**63, 2**63 - 1))
        edges = {"seconds": [-62_135_596_801, 253_402_300_800], "nanos": [1_000_000_000, -1],
                 "label": [self.ctx.classes, -2], "k": [0, 10_001, 100_000], "max_distance": [self.ctx.bits + 1],
                 "thumbnail_size": [1, 5000], "bits": [self.ctx.bits + 8, 8]}.get(name, [])
        return self.rng.choice([v for v in (0, -1, lo, hi, hi // 2 + 1, *edges) if lo <= v <= hi])

    def valid_number(self, f: d.FieldDescriptor, name: str) -> float | int:
        """A value each field's own checks accept (within the pairings that hold across fields)."""
        rng = self.rng
        if f.type == d.FieldDescriptor.TYPE_ENUM:
            return rng.choice([v.number for v in f.enum_type.values])
        choices: dict[str, Callable[[], float | int]] = {
            "lon": lambda: rng.uniform(-180, 180), "west": lambda: rng.uniform(-180, 0),
            "east": lambda: rng.uniform(0, 180), "lat": lambda: rng.uniform(-90, 90),
            "south": lambda: rng.uniform(-90, 0), "north": lambda: rng.uniform(0, 90),
            "k": lambda: rng.randint(1, 50), "bits": lambda: self.ctx.bits,
            "label": lambda: rng.randint(-1, self.ctx.classes - 1),
            "max_distance": lambda: rng.randint(0, self.ctx.bits),
            "seconds": lambda: rng.randint(1_400_000_000, 1_800_000_000), "nanos": lambda: rng.randint(0, 999_999_999),
            "thumbnail_size": lambda: rng.choice([0, 32, 128]), "candidates": lambda: rng.choice([0, 40, 200]),
            "rerank_candidates": lambda: rng.choice([0, 40, 200])}
        if name in choices:
            return choices[name]()
        if f.type in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
            return rng.uniform(-1, 1)
        return rng.randint(0, 3)

    def text(self, name: str) -> str:
        if name in ("id", "ids"):
            if not self.writes and self.ctx.stored_ids and self.rng.random() < 0.5:
                return self.rng.choice(self.ctx.stored_ids)
            if not self.hostile():
                item_id = f"{self.ctx.prefix}{self.rng.randrange(40)}"
            elif self.rng.random() < 0.7:
                item_id = self.ctx.prefix + self.rng.choice(NASTY_TEXT[:19])
            else:
                item_id = self.rng.choice(NASTY_TEXT)
            self.ids_used.add(item_id)
            return item_id
        if self.hostile():
            return self.rng.choice(NASTY_TEXT)
        if name == "model_version":
            return self.ctx.version
        valid = {"sensor": ["MSI", "OLI"], "sensors": ["MSI", "OLI", "SAR"], "platform": ["Sentinel-2A", "Landsat-8"],
                 "source_uri": ["s3://archive/scene-1.tif", "file:///data/x.jp2"], "key": ["cloud", "orbit", "tile"],
                 "value": ["low", "42", "T31UFQ"]}
        return self.rng.choice(valid.get(name, ["x", "name"]))

    def blob(self, name: str) -> bytes:
        nbytes = (self.ctx.bits + 7) // 8
        if name in ("image", "images"):
            return self.rng.choice(self.ctx.broken_images if self.hostile() else self.ctx.images)
        if name in ("code", "codes"):
            if not self.hostile():
                return bytes(self.rng.randrange(256) for _ in range(nbytes))
            return self.rng.choice([b"", b"\xff" * (nbytes + 1), bytes(nbytes - 1), b"\xff" * 4096])
        if name == "thumbnail":
            if not self.hostile():
                return self.rng.choice([b"", self.ctx.images[3]])
            return self.rng.choice([b"\x00" * 10, b"x" * 300_000, self.ctx.broken_images[2]])
        return self.rng.choice([b"", b"\x00", bytes(self.rng.randrange(256) for _ in range(50)), b"\xff" * 70_000])

    def metadata(self) -> list[tuple[str, str | bytes]]:
        """Metadata a hostile client adds: write limits that are no time (or long past), request ids
        (fresh or malformed), unknown keys, odd text and binary values (each under gRPC's 8 KB
        metadata limit, all together); half of such calls go without a deadline."""
        if self.rng.random() >= (0.15 if self.hostile_rate == self.PLAUSIBLE else 0.5):
            return []
        self.deadline = self.rng.random() < 0.5
        out: list[tuple[str, str | bytes]] = []
        for _ in range(self.rng.randint(1, 3)):
            kind = self.rng.randrange(4)
            if kind == 3:  # a write's request id: a fresh one (each call its own), or not a valid one
                out.append((REQUEST_ID_KEY, self.rng.choice([uuid.uuid4().hex, "", "a" * 200, "x;y", "../..", " "])))
            elif kind == 0:
                out.append((NOT_AFTER_KEY, self.rng.choice(
                    ["nan", "inf", "-inf", "1e400", "", "soon", "0x10", "1.5", f"{time.time() + 600:.6f}"])))
            elif kind == 1:
                out.append((f"x-fuzz-{self.rng.randrange(3)}", self.rng.choice(["", "a" * 2000, "%s%n", "../..", " "])))
            else:
                size = self.rng.choice([0, 16, 1000])
                out.append(("x-fuzz-bin", bytes(self.rng.randrange(256) for _ in range(size))))
        return out

    def mutate(self, raw: bytes) -> bytes:
        """``raw`` with bytes flipped, cut, inserted or repeated: what no protobuf library would build."""
        out = bytearray(raw or b"\x0a\x01a")
        for _ in range(self.rng.randint(1, 4)):
            op, at = self.rng.randrange(5), self.rng.randrange(len(out) + 1)
            if op == 0 and out:
                out[min(at, len(out) - 1)] ^= 1 << self.rng.randrange(8)
            elif op == 1:
                del out[at:]
            elif op == 2:
                out[at:at] = bytes(self.rng.choice(
                    [[0xFF, 0xFE], [0x80] * 11, [0x0A, 0x7F], [0xC0, 0x80], [0xED, 0xA0, 0x80]]))
            elif op == 3:
                out[at:at] = out[at:at + 16] * self.rng.randint(2, 50)
            else:
                out[min(at, len(out) - 1):min(at, len(out) - 1) + 1] = b"\xff"
        return bytes(out)


# -- the calls --------------------------------------------------------------------------------------

@dataclass
class Target:
    service: str       # Gateway, Encoder or IndexShard
    address: str
    shard: int = -1    # IndexShard: its number


def _serialize(request: Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def _callable(channel: grpc.Channel, service: str, method: str, reply: type[Message],
              kind: str = "unary_unary") -> Callable:
    """``service``/``method`` on ``channel``, taking messages or their (mutated) bytes, giving ``reply``."""
    return getattr(channel, kind)(f"/orbithash.v1.{service}/{method}", request_serializer=_serialize,
                                  response_deserializer=reply.FromString)


def _method_callable(channel: grpc.Channel, service: str, method: d.MethodDescriptor) -> Callable:
    kind = ("stream_" if method.client_streaming else "unary_") + ("stream" if method.server_streaming else "unary")
    return _callable(channel, service, method.name, GetMessageClass(method.output_type), kind)


def _requests(gen: Generator, method: d.MethodDescriptor, raw: bool) -> list:
    n = gen.rng.choice([0, 1, 1, 2, 3, 5]) if method.client_streaming else 1
    if raw:
        return [gen.mutate(gen.message(method.input_type).SerializeToString()) for _ in range(max(n, 1))]
    return [gen.message(method.input_type) for _ in range(n)]


def _describe(requests: list) -> str:
    parts = []
    for r in requests[:3]:
        text = repr(r) if isinstance(r, bytes) else str(r).replace("\n", " ")
        parts.append(text[:160])
    return " | ".join(parts)


def _describe_metadata(metadata: list[tuple[str, str | bytes]]) -> str:
    return f" | metadata {[(k, v[:40]) for k, v in metadata]}" if metadata else ""


def _past_limit(metadata: list[tuple[str, str | bytes]]) -> bool:
    """Whether ``metadata`` holds a write limit that has passed (a shard must then refuse a write)."""
    for key, value in metadata:
        with contextlib.suppress(ValueError, TypeError):
            if key == NOT_AFTER_KEY and math.isfinite(float(value)) and float(value) < time.time():
                return True
    return False


class Fuzzer:
    def __init__(self, targets: list[Target], access: Access, ctx: Context, seed: int) -> None:
        self.ctx = ctx
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.targets = targets
        self.access = access
        self.channels = {t.address: access.channel(t) for t in self.targets}
        self.written: dict[int, set[str]] = defaultdict(set)  # -1: through the gateway; n: shard n directly

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    # what a write may have changed
    def count(self, target: Target) -> int:
        channel = self.channels[target.address]
        if target.service == "IndexShard":
            reply = _callable(channel, "IndexShard", "Stats", pb.StatsResponse)(b"", timeout=30)
            return int(reply.count)
        return int(self.info().total)

    def info(self) -> pb.InfoResponse:
        gateway = self.targets[0]
        return _callable(self.channels[gateway.address], "Gateway", "Info", pb.InfoResponse)(
            b"", timeout=30, metadata=self.access.metadata(gateway))

    def run(self, calls: int, raw_calls: int, probes: int) -> Tally:
        for target in self.targets:
            service = pb.DESCRIPTOR.services_by_name[target.service]
            for method in service.methods:
                name = f"{target.service}{'' if target.shard < 0 else target.shard}.{method.name}"
                write = (target.service, method.name) in WRITES
                plan = [False] * calls + [True] * raw_calls
                for raw in tqdm(plan, desc=name, leave=False, disable=not sys.stderr.isatty()):
                    self.one(target, method, name, write, raw)
                for _ in range(probes):
                    self.probe(target, method, name, write)
                self.alive(name)
        return self.tally

    def send(self, target: Target, method: d.MethodDescriptor, requests: list, metadata: list,
             channel: grpc.Channel | None = None, deadline: bool = True) -> tuple[str, str, object, Iterable]:
        """One call: (status, message, reply, trailing metadata).

        ``deadline`` False: sent without one, as some clients do (a unary answer is still awaited for
        at most DEADLINE_S, then the call is cancelled and reported as HANG)."""
        call = _method_callable(channel or self.channels[target.address], target.service, method)
        arg = iter(requests) if method.client_streaming else requests[0]
        try:
            if method.server_streaming:
                return "OK", "", list(call(arg, timeout=DEADLINE_S, metadata=metadata)), ()
            if deadline:
                reply, outcome = call.with_call(arg, timeout=DEADLINE_S, metadata=metadata)
                return "OK", "", reply, outcome.trailing_metadata() or ()
            future = call.future(arg, metadata=metadata)
            try:
                return "OK", "", future.result(timeout=DEADLINE_S), future.trailing_metadata() or ()
            except grpc.FutureTimeoutError:
                future.cancel()
                return "HANG", f"no answer in {DEADLINE_S:.0f} s", None, ()
        except grpc.RpcError as err:
            return err.code().name, err.details() or "", None, err.trailing_metadata() or ()

    def one(self, target: Target, method: d.MethodDescriptor, name: str, write: bool, raw: bool) -> None:
        gen = Generator(self.ctx, self.rng, writes=write)
        requests = _requests(gen, method, raw)
        extra = gen.metadata()
        before = self.count(target) if write else 0
        example = f"{name}{' raw' if raw else ''}: {_describe(requests)}{_describe_metadata(extra)}"
        status, message, reply, trailing = self.send(target, method, requests, self.access.metadata(target) + extra,
                                                     deadline=gen.deadline)
        self.tally.by_method[name][status] += 1
        acceptable = ACCEPTABLE | ({"DEADLINE_EXCEEDED"} if _past_limit(extra) else set())
        self.check_answer(acceptable, status, message, example)
        if write:
            self.record_written(target, method.name, requests, raw, gen)
            self.check_stored(target, method.name, before, status, reply, trailing, example)
        if status == "OK" and reply is not None and method.name in ("Search", "SearchMany"):
            self.check_hits(target, requests[0], reply, raw, example)

    def check_answer(self, acceptable: set[str], status: str, message: str, example: str,
                     secrets: Iterable[str] = ()) -> None:
        """The status is one of ``acceptable``; a refusal says why, without internals or ``secrets``."""
        if status != "OK":
            self.tally.reasons[example.split(":", 1)[0]][f"{status}: {message[:70]}"] += 1
        if status not in acceptable:
            self.tally.violation(f"status {status}", f"{example} -> {message}")
        if status != "OK" and not (0 < len(message) <= MAX_MESSAGE_CHARS
                                   and not any(leak in message for leak in (*LEAKS, *secrets))):
            self.tally.violation("message", f"{example} -> {status} {message[:200]!r} ({len(message)} chars)")

    def probe(self, target: Target, method: d.MethodDescriptor, name: str, write: bool) -> None:
        """A plausible request with a credential the service must refuse: no token, a malformed,
        unknown or doubled one, or one whose role is too low (the gateway); a certificate of the
        cluster that is not the gateway's (the internal services). Nothing may change."""
        case = self.credential_case(target, method.name)
        if case is None:
            return
        label, metadata, expected, channel = case
        gen = Generator(self.ctx, self.rng, writes=write)  # admission comes before any check of content
        requests = [gen.message(method.input_type) for _ in range(2 if method.client_streaming else 1)]
        before = self.count(target) if write else 0
        example = f"{name} ({label}): {_describe(requests)}"
        status, message, reply, trailing = self.send(target, method, requests, metadata, channel)
        if channel is not None:
            channel.close()
        self.tally.probes[name][status] += 1
        presented = [v.split(" ", 1)[-1] for k, v in metadata if k == "authorization"]
        self.check_answer({expected}, status, message, example, [p for p in presented if len(p) >= 8])
        if write:
            self.record_written(target, method.name, requests, False, gen)
            self.check_stored(target, method.name, before, status, reply, trailing, example)

    def credential_case(self, target: Target, method: str) -> tuple[str, list, str, grpc.Channel | None] | None:
        """(what, metadata, the status it must get, a channel of its own or None) of one probe."""
        rng, access = self.rng, self.access
        if target.service != "Gateway":
            if access.stranger is None:
                return None
            return "another member's certificate", [], "PERMISSION_DENIED", access.channel(target, access.stranger)
        if not access.token:
            return None
        forged = "ohk_" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
                                  for _ in range(43))
        cases: list[tuple[str, list[tuple[str, str]], str]] = [
            ("no token", [], "UNAUTHENTICATED"),
            ("not Bearer", [("authorization", rng.choice(["Basic dXNlcjpwdw==", "Bearer", "Bearer ", "Token x",
                                                           access.token]))],
             "UNAUTHENTICATED"),
            ("unknown token", [("authorization", f"Bearer {rng.choice([forged, access.token[:-1], 'x' * 2000])}")],
             "UNAUTHENTICATED"),
            ("two tokens", rng.sample([("authorization", f"Bearer {access.token}"),
                                       ("authorization", f"Bearer {forged}")], 2), "UNAUTHENTICATED"),
        ]
        need = METHOD_ROLES.get(method, Role.ADMIN)
        low = [(label, token) for label, token in access.role_tokens.items() if Role.parse(label) < need]
        if low:
            label, token = rng.choice(low)
            cases.append((f"{label} token", [("authorization", f"Bearer {token}")], "PERMISSION_DENIED"))
        label, metadata, expected = rng.choice(cases)
        return label, metadata, expected, None

    def record_written(self, target: Target, method: str, requests: list, raw: bool, gen: Generator) -> None:
        where = -1 if target.service == "Gateway" else target.shard
        self.written[where].update(gen.ids_used)
        kind = {"Ingest": pb.IngestItem, "Add": pb.AddRequest}.get(method)
        if raw and kind is not None:  # a mutated request: read back which ids it held
            for data in requests:
                try:
                    msg = kind.FromString(data)
                except DecodeError:
                    continue  # the service cannot have parsed it either
                self.written[where].update(_ids_in(msg))

    def check_stored(self, target: Target, method: str, before: int, status: str, reply: object,
                     trailing: Iterable, example: str) -> None:
        after = self.count(target)
        summary = dict(trailing).get(INGEST_SUMMARY_KEY)
        if status == "OK":
            said = {"Ingest": lambda r: r.ingested - r.replaced, "Add": lambda r: r.added - r.replaced,
                    "Delete": lambda r: -r.deleted, "UpdateMetadata": lambda r: 0}[method](reply)
        elif summary is not None:  # a failed ingest says what it stored
            s = pb.IngestSummary.FromString(summary)
            said = s.ingested - s.replaced
        else:
            said = 0
        if after - before != said:
            self.tally.violation("stored", f"{example} -> {status}: count {before} -> {after}, "
                                           f"the reply says {said:+d}")

    def check_hits(self, target: Target, request: object, reply: object, raw: bool, example: str) -> None:
        if raw or target.service != "Gateway":
            return  # a mutated request's fields are not known here; the shard's hits are the gateway's input
        many = isinstance(request, pb.SearchManyRequest)
        results = list(reply.results) if many else [reply]
        if many and len(results) != len(request.queries):
            self.tally.violation("hits", f"{example} -> {len(results)} results for {len(request.queries)} queries")
        for result in results:
            hits = list(result.hits)
            keys = [h.score if request.rerank else h.distance for h in hits]
            problems = []
            if len(hits) > request.k:
                problems.append(f"{len(hits)} hits for k {request.k}")
            if keys != sorted(keys):
                problems.append(f"not in order: {keys[:10]}")
            if request.HasField("max_distance") and any(h.distance > request.max_distance for h in hits):
                problems.append(f"a hit beyond max_distance {request.max_distance}")
            if request.HasField("label") and any(h.label != request.label for h in hits):
                problems.append(f"a hit without label {request.label}")
            if any(h.distance > self.ctx.bits for h in hits):
                problems.append("a distance over the code length")
            if problems:
                self.tally.violation("hits", f"{example} -> {'; '.join(problems)}")

    def alive(self, after: str) -> None:
        for target in self.targets:
            ok = grpc_serving(target.address, timeout=10, credentials=self.access.credentials(target))
            if ok and target.service == "Gateway":
                try:
                    ok = all(s.healthy for s in self.info().shards)
                except grpc.RpcError as err:
                    ok, after = False, f"{after} (Info: {err.code().name})"
            if not ok:
                self.tally.violation("alive", f"{target.service} at {target.address} not serving after {after}")

    def clean_up(self) -> int:
        """Delete every id the fuzzer may have written, where it wrote it; the number deleted."""
        deleted = 0
        for where, ids in self.written.items():
            target = self.targets[0] if where < 0 else next(t for t in self.targets if t.shard == where)
            call = _callable(self.channels[target.address], target.service, "Delete", pb.DeleteResponse)
            metadata = self.access.metadata(target)
            ordered = sorted(ids)
            for a in range(0, len(ordered), 200):
                try:
                    deleted += call(pb.DeleteRequest(ids=ordered[a:a + 200]), timeout=60, metadata=metadata).deleted
                except grpc.RpcError:  # a batch holding an id the service refuses: one at a time
                    for item_id in ordered[a:a + 200]:
                        with contextlib.suppress(grpc.RpcError):
                            deleted += call(pb.DeleteRequest(ids=[item_id]), timeout=60, metadata=metadata).deleted
        return deleted


def _ids_in(msg: Message) -> set[str]:
    if isinstance(msg, pb.IngestItem):
        return {msg.id}
    return {item.id for item in getattr(msg, "items", [])}


# -- the run ------------------------------------------------------------------------------------------

def context_of(gateway: Target, access: Access, prefix: str, real: list[bytes], rng: random.Random) -> Context:
    metadata = access.metadata(gateway)
    with access.channel(gateway) as channel:
        info = _callable(channel, "Gateway", "Info", pb.InfoResponse)(b"", timeout=30, metadata=metadata)
        search = _callable(channel, "Gateway", "Search", pb.SearchResponse)
        codes = [search(pb.SearchRequest(image=image, k=5), timeout=60, metadata=metadata) for image in real[:2]]
    stored = sorted({h.id for reply in codes for h in reply.hits})
    return Context(info.model.bits, info.model.version, len(info.model.class_names), stored,
                   *image_pool(real, rng), prefix)


def fuzz(gateway: str, shards: list[str], encoder: str | None, calls: int, raw_calls: int, seed: int,
         prefix: str, split: Split, access: Access | None = None, probes: int = 0) -> dict[str, object]:
    """``probes``: calls per method with a credential the service must refuse (see Fuzzer.probe)."""
    rng = random.Random(seed)
    real = [r.data for r in split.queries[:: max(1, len(split.queries) // 8)]][:8]
    targets = ([Target("Gateway", gateway)] + [Target("IndexShard", a, i) for i, a in enumerate(shards)]
               + ([Target("Encoder", encoder)] if encoder else []))
    access = access or Access()
    ctx = context_of(targets[0], access, prefix, real, rng)
    fuzzer = Fuzzer(targets, access, ctx, seed)
    try:
        total_before = fuzzer.count(fuzzer.targets[0])
        started = time.monotonic()
        tally = fuzzer.run(calls, raw_calls, probes)
        cleaned = fuzzer.clean_up()
        total_after = fuzzer.count(fuzzer.targets[0])
        if total_after != total_before:
            tally.violation("left behind", f"{total_before} items before, {total_after} after cleaning up")
    finally:
        fuzzer.close()
    return {"violations": dict(tally.violations), "calls": sum(sum(c.values()) for c in tally.by_method.values()),
            "by_method": {m: dict(c) for m, c in tally.by_method.items()},
            "probes": {m: dict(c) for m, c in tally.probes.items()}, "examples": dict(tally.examples),
            "top_refusals": {m: [f"{n} × {text}" for text, n in c.most_common(3)] for m, c in tally.reasons.items()},
            "cleaned_up": cleaned, "seconds": round(time.monotonic() - started, 1), "seed": seed,
            "bits": ctx.bits, "model_version": ctx.version, "tls": access.gateway is not None}


def print_table(result: dict) -> None:
    for title, table in (("method", result["by_method"]), ("credential refused", result["probes"])):
        if not table:
            continue
        statuses = sorted({s for c in table.values() for s in c}, key=lambda s: (s != "OK", s))
        print(f"{title:<28}" + "".join(f"{s[:18]:>20}" for s in statuses))
        for method, counts in table.items():
            print(f"{method:<28}" + "".join(f"{counts.get(s, 0):>20}" for s in statuses))
        print()
    if result["violations"]:
        print("VIOLATIONS")
        for kind, n in result["violations"].items():
            print(f"  {kind}: {n}")
            for example in result["examples"][kind]:
                print(f"    - {example}")
    else:
        probes = sum(sum(c.values()) for c in result["probes"].values())
        print(f"no violations in {result['calls']} calls and {probes} probes of credentials")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="generated requests per method (default 200)")
    parser.add_argument("--raw", type=int, default=None, help="mutated-bytes requests per method (default calls / 4)")
    parser.add_argument("--probes", type=int, default=None,
                        help="calls per method with a credential that must be refused (default calls / 8; "
                             "with tokens or --stranger-cert only)")
    parser.add_argument("--quick", action="store_true", help="25 calls, 8 raw ones and 4 probes per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tls", action="store_true", help="the local cluster with TLS, tokens and mutual TLS inside")
    parser.add_argument("--target", help="a running gateway; default: start the local cluster")
    parser.add_argument("--shard", action="append", default=[], help="an index shard's address (repeatable)")
    parser.add_argument("--encoder", help="the encoder's address")
    secured = parser.add_argument_group("a running cluster with TLS (files only: a token is never an argument)")
    secured.add_argument("--tls-ca", type=Path, help="CA bundle that verifies every service")
    secured.add_argument("--tls-cert", type=Path, help="a certificate the internal services admit (the gateway's)")
    secured.add_argument("--tls-key", type=Path, help="its key")
    secured.add_argument("--token-file", type=Path, help="an admin token (the fuzzer deletes what it wrote)")
    secured.add_argument("--reader-token-file", type=Path, help="a reader token: probes of too low a role")
    secured.add_argument("--writer-token-file", type=Path, help="a writer token: probes of too low a role")
    secured.add_argument("--stranger-cert", type=Path, help="a certificate of the cluster the internal services "
                                                           "must refuse (probes)")
    secured.add_argument("--stranger-key", type=Path, help="its key")
    parser.add_argument("--id-prefix", default=f"fuzz-{uuid.uuid4().hex[:8]}/")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    args = parser.parse_args(argv)
    if args.token_file and not args.tls_ca:
        parser.error("a token would cross the network in plaintext: give --tls-ca as well")
    if bool(args.tls_cert) != bool(args.tls_key) or bool(args.stranger_cert) != bool(args.stranger_key):
        parser.error("a certificate needs its key: give --tls-cert with --tls-key, --stranger-cert with --stranger-key")
    if args.tls and args.target:
        parser.error("--tls starts the local cluster with TLS; for a running cluster give --tls-ca and the rest")
    if (args.tls_ca or args.token_file) and not args.target:
        parser.error("--tls-ca and the files after it are for a running cluster (--target); "
                     "the local cluster takes --tls")
    calls, raw_calls = (25, 8) if args.quick else (args.calls, args.raw if args.raw is not None else args.calls // 4)
    probes = 4 if args.quick and args.probes is None else args.probes if args.probes is not None else calls // 8
    try:
        split = load_split(None)
        if args.target:
            result = fuzz(args.target, args.shard, args.encoder, calls, raw_calls, args.seed, args.id_prefix, split,
                          access_from(args), probes)
        else:
            with tempfile.TemporaryDirectory() as work, Cluster(ClusterConfig(
                    model_repository=args.model_repository, work_dir=Path(work), tls=args.tls)) as cluster:
                access = access_of(cluster)
                options = {"ca_file": cluster.security.ca, "token": access.token} if cluster.security else {}
                ingest(cluster.gateway.address, split.database[::20], streams=1, **options)  # items to search, get
                result = fuzz(cluster.gateway.address, [s.address for s in cluster.shards], cluster.encoder.address,
                              calls, raw_calls, args.seed, args.id_prefix, split, access, probes)
    except grpc.RpcError as err:  # the cluster could not be asked what valid looks like (nothing was fuzzed)
        hint = {grpc.StatusCode.UNAUTHENTICATED: " (a gateway with tokens needs --tls-ca and --token-file)",
                grpc.StatusCode.UNAVAILABLE: " (is it running? a TLS gateway needs --tls-ca)"}.get(err.code(), "")
        print(f"fuzz: the gateway's first calls failed: {err.code().name}: {err.details()}{hint}", file=sys.stderr)
        return 3
    except Exception:
        traceback.print_exc()
        return 2
    print_table(result)
    print(json.dumps(result))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
