#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/seed-*, in each target's input layout
(see the comment at the top of each fuzz_targets/*.rs). Run from anywhere: python3 fuzz/make_seeds.py
It removes stale seed-* files first; other files in the corpus dirs (found by fuzzing) are kept."""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 §5.7

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def mask(payload, key=KEY):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def header(fin, op, n, key=KEY):
    b0 = (0x80 if fin else 0) | op
    mbit = 0x80 if key is not None else 0
    if n < 126:
        h = bytes([b0, mbit | n])
    elif n <= 0xFFFF:
        h = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        h = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    return h + (key if key is not None else b"")


def frame(op, payload=b"", fin=True, key=KEY):
    """A whole client frame, masked with `key` (unmasked when key is None)."""
    return header(fin, op, len(payload), key) + (mask(payload, key) if key is not None else payload)


def close(code, reason=b""):
    return frame(CLOSE, struct.pack(">H", code) + reason)


RFC_HELLO = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
assert RFC_HELLO == frame(TEXT, b"Hello")
# §5.7 examples as the RFC prints them (server to client, unmasked): a server must refuse them.
RFC_UNMASKED_HELLO = bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
RFC_UNMASKED_FRAGMENTS = bytes([0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F])
RFC_UNMASKED_PING = bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
RFC_MASKED_PONG = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
RFC_FRAGMENTED = frame(TEXT, b"Hel", fin=False) + frame(CONT, b"lo")
BIN_256 = frame(BINARY, bytes(range(256)))
assert BIN_256[:4] == bytes([0x82, 0xFE, 0x01, 0x00])
# A 64 KiB binary frame: header (82 FF 00 00 00 00 00 01 00 00 + key) and the first 64 payload
# bytes only, so the seed stays small; the frame is still pending when the input ends.
BIN_64K_HEAD = header(True, BINARY, 65536) + mask(bytes(64))
assert BIN_64K_HEAD[:10] == bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0])
CLOSE_1000 = close(1000, b"bye")

RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def request(target=b"/", extra=b"", version=b"13"):
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: localhost:8181\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


# Parameter bytes. Policy selector (handshake, connection): bits 0-1 path, 2-3 origins, 4-5 limit.
def policy(path=0, origins=0, limit=3, jwt=False, capture=False):
    """jwt: the token parameter (handshake) / JWT auth (connection); capture: the webhook's view
    of the request (handshake only)."""
    return bytes([path | origins << 2 | limit << 4 | (0x40 if jwt else 0) | (0x80 if capture else 0)])


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt(claims, secret=b"fuzz-secret", header=None):
    """An HS256 token, as the connection target's JWT auth expects (secret `fuzz-secret`)."""
    h = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    p = b64url(json.dumps(claims).encode())
    sig = b64url(hmac.new(secret, h + b"." + p, hashlib.sha256).digest())
    return h + b"." + p + b"." + sig


EXP_2100 = 4102444800
EXP_SOON = 946684800 + 300  # within the connection target's first timer step
TOKEN = jwt({"sub": "device-42", "exp": EXP_2100})


def reads(*sizes):
    """N-1, then the read sizes minus one (parse_frame and connection layouts)."""
    assert 1 <= len(sizes) <= 16 and all(1 <= s <= 256 for s in sizes)
    return bytes([len(sizes) - 1] + [s - 1 for s in sizes])


UNLIMITED = bytes([255])


# connection under TLS: byte 1 (N-1 of reads()) also holds the transport in bits 4-5 (1 TLS, 2 TLS
# ended by the client's close_notify, 3 TLS with the client's last write unencrypted), bit 6 TLS 1.2
# and bit 7 ChaCha20-Poly1305; the client's write sizes follow the read sizes.
TLS, TLS_CLOSE_NOTIFY, TLS_RAW_TAIL = 1, 2, 3


def tls(read_sizes, write_sizes=(128,), end=TLS, tls12=False, chacha=False, key_updates=()):
    """Read sizes, transport bits and write sizes (1..=128 bytes, 128: all the rest); a TLS 1.3
    KeyUpdate before the writes whose indexes are in key_updates."""
    assert 1 <= len(write_sizes) <= 16 and all(1 <= s <= 128 for s in write_sizes)
    r = reads(*read_sizes)
    flags = end << 4 | (0x40 if tls12 else 0) | (0x80 if chacha else 0)
    w = [s - 1 | (0x80 if i in key_updates else 0) for i, s in enumerate(write_sizes)]
    return bytes([r[0] | flags]) + r[1:] + bytes([len(write_sizes) - 1] + w)


# tls_hello: TLS records and ClientHellos built by hand (a fixed random and key share, so the seeds
# do not change from one run of this script to the next).
def record(content_type, body, version=b"\x03\x01"):
    return bytes([content_type]) + version + struct.pack(">H", len(body)) + body


def vec8(b):
    return bytes([len(b)]) + b


def vec16(b):
    return struct.pack(">H", len(b)) + b


def ext(kind, body):
    return struct.pack(">H", kind) + vec16(body)


# RFC 7748 §6.1: Alice's X25519 public key (a valid point, so the server completes its flight).
X25519_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
SIG_ALGS = bytes.fromhex("0403080404010503080505010806060108070201")


def client_hello(tls13=True, alpn=b"http/1.1", host=b"localhost", suites=None, extra=b""):
    """A ClientHello handshake message (type 1), not yet in a record."""
    if suites is None:
        suites = bytes.fromhex("130113021303c02bcca9") if tls13 else bytes.fromhex("c02bcca9c02c")
    exts = ext(0, vec16(b"\x00" + vec16(host)))
    exts += ext(10, vec16(bytes.fromhex("001d0017")))
    exts += ext(11, vec8(b"\x00"))
    exts += ext(13, vec16(SIG_ALGS))
    exts += ext(23, b"") + ext(0xFF01, b"\x00")
    if alpn is not None:
        exts += ext(16, vec16(vec8(alpn)))
    if tls13:
        exts += ext(43, vec8(bytes.fromhex("03040303")))
        exts += ext(45, vec8(b"\x01"))
        exts += ext(51, vec16(bytes.fromhex("001d") + vec16(X25519_PUBLIC)))
    body = b"\x03\x03" + bytes(range(32)) + vec8(bytes(range(32, 64))) + vec16(suites) + vec8(b"\x00")
    body += vec16(exts + extra)
    return b"\x01" + struct.pack(">I", len(body))[1:] + body


HELLO_13 = client_hello()
HELLO_12 = client_hello(tls13=False)


def hello_params(read_sizes=(256,), real=False, tls12=False, chacha=False):
    """tls_hello's byte 0 and read sizes; real: a rustls client's ClientHello goes first."""
    r = reads(*read_sizes)
    flags = (0x10 if real else 0) | (0x20 if tls12 else 0) | (0x40 if chacha else 0)
    return bytes([r[0] | flags]) + r[1:]


def utf8_params(frag_sizes=(), read_sizes=(256,), pings=False, hello=False, key=KEY):
    """The 22-byte parameter block of message_utf8."""
    assert len(frag_sizes) <= 7 and 1 <= len(read_sizes) <= 8
    p = bytes([len(frag_sizes)]) + bytes(frag_sizes).ljust(7, b"\0")
    p += bytes([len(read_sizes) - 1]) + bytes(s - 1 for s in read_sizes).ljust(8, b"\0")
    p += key + bytes([(1 if pings else 0) | (2 if hello else 0)])
    assert len(p) == 22
    return p


SEEDS = {
    "parse_frame": {
        "rfc-masked-hello-byte-at-a-time": UNLIMITED + reads(1) + RFC_HELLO,
        "rfc-masked-hello-one-read": UNLIMITED + reads(256) + RFC_HELLO,
        "rfc-masked-fragmented": UNLIMITED + reads(3, 5) + RFC_FRAGMENTED,
        "rfc-unmasked-hello": UNLIMITED + reads(256) + RFC_UNMASKED_HELLO,
        "rfc-unmasked-fragments": UNLIMITED + reads(2) + RFC_UNMASKED_FRAGMENTS,
        "rfc-unmasked-ping": UNLIMITED + reads(256) + RFC_UNMASKED_PING,
        "rfc-masked-ping-pong": UNLIMITED + reads(4) + frame(PING, b"Hello") + RFC_MASKED_PONG,
        "rfc-binary-256": UNLIMITED + reads(100, 7) + BIN_256,
        "rfc-binary-64k-header": UNLIMITED + reads(13) + BIN_64K_HEAD,
        "binary-64k-header-over-limit": bytes([254]) + reads(256) + BIN_64K_HEAD,
        "close-1000": UNLIMITED + reads(256) + CLOSE_1000,
        "close-empty-and-bad-code": UNLIMITED + reads(3) + frame(CLOSE) + close(1005),
        "fragments-with-controls": UNLIMITED
        + reads(1, 9, 2, 30)
        + frame(BINARY, b"ab", fin=False)
        + frame(PING, b"p1")
        + frame(CONT, b"", fin=False)
        + frame(PONG)
        + frame(CONT, b"cd")
        + frame(TEXT, "añb".encode())
        + CLOSE_1000,
        "fragments-over-limit": bytes([10]) + reads(3) + frame(BINARY, bytes(6), fin=False) + frame(CONT, bytes(5)),
        "text-invalid-utf8": UNLIMITED + reads(5) + frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"),
        "text-split-character": UNLIMITED + reads(7) + frame(TEXT, "κό".encode()[:3], fin=False) + frame(CONT, "κό".encode()[3:]),
        "header-errors": UNLIMITED + reads(2) + bytes([0xC1, 0x80, 0, 0, 0, 0]),
        "continuation-without-message": UNLIMITED + reads(1) + frame(CONT, b"x"),
        "non-minimal-length": UNLIMITED + reads(256) + bytes([0x82, 0xFE, 0, 125]) + KEY,
    },
    "handshake": {
        "rfc-request": policy() + RFC_REQUEST,
        "rfc-request-strict-policy": policy(path=3, origins=2) + RFC_REQUEST,
        "rfc-request-wrong-path": policy(path=2) + RFC_REQUEST,
        "rfc-request-origin-refused": policy(origins=1) + RFC_REQUEST,
        "client-id": policy() + request(b"/ws?client_id=dev%3A42&x=1"),
        "token-and-capture": policy(jwt=True, capture=True)
        + request(b"/ws?client_id=device-42&token=" + TOKEN, b"Origin: https://good.example\r\nCookie: s=1\r\nAuthorization: Bearer x\r\n"),
        "token-twice": policy(jwt=True) + request(b"/?token=a&token=b"),
        "token-bad-escape": policy(jwt=True, capture=True) + request(b"/?token=%FF%zz"),
        "client-id-invalid": policy() + request(b"/?client_id=a%20b"),
        "absolute-form": policy(path=2) + request(b"http://server.example.com/ws?client_id=a"),
        "version-8": policy() + request(version=b"8"),
        "with-body": policy() + request(extra=b"Content-Length: 5\r\n"),
        "bare-lf": policy() + request().replace(b"\r\n", b"\n"),
        "not-http": policy() + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "too-large": policy() + request(extra=b"X-Big: " + b"a" * 8200 + b"\r\n"),
        "request-then-frame": policy() + request() + RFC_HELLO,
    },
    "message_utf8": {
        "hello": utf8_params() + b"Hello",
        "hello-fragmented-byte-reads": utf8_params(frag_sizes=(3,), read_sizes=(1,)) + b"Hello",
        "kosme-fragments-pings": utf8_params(frag_sizes=(1, 2, 3, 5), read_sizes=(3, 1, 7), pings=True, hello=True)
        + "κόσμε€𝄞".encode(),
        "surrogate-mid-frame": utf8_params(read_sizes=(4,)) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
        "truncated-at-end": utf8_params(frag_sizes=(2,), read_sizes=(2, 5)) + "κόσμε€𝄞".encode()[:-1],
        "overlong": utf8_params(read_sizes=(1,)) + b"a\xc0\xafb",
        "invalid-ff": utf8_params(frag_sizes=(0, 1), pings=True) + b"ok\xffno",
        "empty": utf8_params(),
    },
    "connection": {
        "rfc-request-then-frames": policy()
        + reads(256)
        + RFC_REQUEST
        + RFC_HELLO
        + frame(TEXT, b"heartbeat")
        + frame(TEXT, b"heartbeat:device-42")
        + frame(PING, b"Hello")
        + RFC_FRAGMENTED
        + CLOSE_1000,
        "small-reads": policy(path=3, origins=2, limit=1)
        + reads(1, 17, 3, 64)
        + RFC_REQUEST
        + frame(TEXT, b" heartbeat device-7 ")
        + frame(BINARY, b"\x00\x01", fin=False)
        + frame(PONG, b"x")
        + frame(CONT, b"\x02")
        + frame(TEXT, b"heartbeat:bad id")
        + CLOSE_1000,
        "request-in-two-reads": policy() + reads(40, 256) + request(b"/?client_id=a") + BIN_256 + close(1001, b"going"),
        "rejected": policy(path=1) + reads(256) + RFC_REQUEST + RFC_HELLO,
        "frame-error-after-upgrade": policy(limit=0) + reads(256) + request() + frame(TEXT, b"x" * 200),
        "ping-as-close-payload": policy() + reads(5) + request() + frame(PING, struct.pack(">H", 1000) + b"r") + frame(PING, b"\x03"),
        "jwt-valid-then-refresh": policy(jwt=True)
        + reads(7, 256)
        + request(b"/?token=" + TOKEN)
        + frame(TEXT, b"heartbeat:device-42")
        + frame(TEXT, b"token " + jwt({"sub": "device-42", "exp": EXP_2100 + 1}))
        + frame(TEXT, b"hello")
        + CLOSE_1000,
        "jwt-expires-in-the-first-step": policy(jwt=True) + reads(256) + request(b"/?token=" + jwt({"sub": "d", "exp": EXP_SOON})),
        "jwt-refresh-for-another-sub": policy(jwt=True)
        + reads(256)
        + request(b"/?token=" + TOKEN)
        + frame(TEXT, b"token " + jwt({"sub": "other", "exp": EXP_2100})),
        "jwt-alg-none": policy(jwt=True)
        + reads(256)
        + request(b"/?token=" + jwt({"sub": "device-42", "exp": EXP_2100}, header={"alg": "none"})[:-43]),
        "jwt-bad-signature": policy(jwt=True) + reads(256) + request(b"/?token=" + jwt({"sub": "a", "exp": EXP_2100}, secret=b"x")),
        "jwt-missing": policy(jwt=True) + reads(256) + request(b"/?client_id=a") + RFC_HELLO,
        "jwt-client-id-mismatch": policy(jwt=True) + reads(256) + request(b"/?client_id=a&token=" + TOKEN),
        # Bits 6 and 7: the auth webhook; bits 0-1 its verdict (also the path policy).
        "webhook-accepts-early-frames-after": bytes([0xC0 | 3 << 4])
        + reads(9, 256)
        + request(b"/?client_id=device-42")
        + frame(TEXT, b"heartbeat:device-42")
        + frame(PING, b"early")
        + CLOSE_1000,
        "webhook-refuses": bytes([0xC1 | 3 << 4]) + reads(256) + request() + RFC_HELLO,
        "webhook-fails": bytes([0xC2 | 3 << 4]) + reads(256) + request(b"/ws?client_id=x"),
        "webhook-never-answers": bytes([0xC3 | 3 << 4]) + reads(256) + request(b"/chat"),
        "webhook-too-much-early-data": bytes([0xC0 | 3 << 4]) + reads(256) + request() + frame(BINARY, bytes(9000)),
        # Over TLS (a handshake first, then the same bytes encrypted by the client).
        "tls13-upgrade-heartbeat-messages-close": policy()
        + tls((256,))
        + request(b"/?client_id=device-42")
        + frame(TEXT, b"heartbeat")
        + RFC_HELLO
        + frame(PING, b"Hello")
        + RFC_FRAGMENTED
        + CLOSE_1000,
        "tls13-chacha-small-records-key-update": policy(path=3, origins=2, limit=1)
        + tls((1, 17, 3, 64), (7, 64, 33, 2), chacha=True, key_updates=(1,))
        + RFC_REQUEST
        + frame(TEXT, b" heartbeat device-7 ")
        + frame(BINARY, b"\x00\x01", fin=False)
        + frame(PONG, b"x")
        + frame(CONT, b"\x02")
        + CLOSE_1000,
        "tls12-gcm-heartbeat-liveness": bytes([0x80 | 3 << 4])
        + tls((100, 7), (128,), tls12=True)
        + request(b"/ws?client_id=a")
        + frame(TEXT, b"heartbeat:a")
        + BIN_256
        + close(1001, b"going"),
        "tls12-chacha-byte-records": policy()
        + tls((5, 256), (1, 3, 128), tls12=True, chacha=True)
        + request()
        + frame(TEXT, b"heartbeat")
        + CLOSE_1000,
        "tls13-close-notify-after-close": policy()
        + tls((64,), (128,), end=TLS_CLOSE_NOTIFY)
        + request(b"/?client_id=device-42")
        + frame(TEXT, b"heartbeat")
        + CLOSE_1000,
        "tls12-close-notify-without-close-frame": policy()
        + tls((256,), (30,), end=TLS_CLOSE_NOTIFY, tls12=True)
        + request()
        + frame(TEXT, b"hello"),
        "tls13-jwt": policy(jwt=True)
        + tls((7, 256), (100,))
        + request(b"/?token=" + TOKEN)
        + frame(TEXT, b"heartbeat:device-42")
        + frame(TEXT, b"token " + jwt({"sub": "device-42", "exp": EXP_2100 + 1}))
        + CLOSE_1000,
        # The last write unencrypted: frames after an upgrade, or everything (plain HTTP on a TLS
        # connection).
        "tls13-raw-tail-after-upgrade": policy()
        + tls((40,), (100,), end=TLS_RAW_TAIL)
        + request()
        + frame(TEXT, b"heartbeat")
        + RFC_HELLO
        + CLOSE_1000,
        "tls12-raw-request": policy() + tls((256,), (128,), end=TLS_RAW_TAIL, tls12=True) + request() + RFC_HELLO,
        "tls13-raw-record-tail": policy()
        + tls((256,), end=TLS_RAW_TAIL)
        + record(0x17, bytes(40), b"\x03\x03"),
    },
    "tls_hello": {
        "client-hello-tls13": hello_params() + record(0x16, HELLO_13),
        "client-hello-tls12-small-reads": hello_params((3, 50)) + record(0x16, HELLO_12),
        "client-hello-in-two-records": hello_params((10,)) + record(0x16, HELLO_13[:60]) + record(0x16, HELLO_13[60:]),
        "client-hello-no-alpn": hello_params() + record(0x16, client_hello(alpn=None)),
        "client-hello-other-alpn": hello_params() + record(0x16, client_hello(alpn=b"h2")),
        "client-hello-no-common-suite": hello_params() + record(0x16, client_hello(suites=b"\x00\x2f")),
        "client-hello-truncated": hello_params((7,)) + record(0x16, HELLO_13)[:-9],
        "client-hello-then-alert": hello_params() + record(0x16, HELLO_13) + record(0x15, b"\x01\x00", b"\x03\x03"),
        # Two empty ClientHellos in one record: the first fails, and the alert must not make rustls
        # slice the second from a buffer other than the one it came in (a panic in rustls once).
        "failed-hello-with-another-in-its-record": hello_params() + record(0x16, b"\x01\x00\x00\x00" * 2),
        "oversized-record": hello_params() + b"\x16\x03\x01\xff\xff" + bytes(64),
        "empty-records": hello_params((1,)) + record(0x16, b"") + record(0x17, b"") + record(0x18, b"\x01"),
        "plain-http": hello_params() + request(),
        "sslv2-hello": hello_params() + bytes.fromhex("802b0103010012000000100100800300800700c0060040040080") + bytes(16),
        "change-cipher-spec-first": hello_params() + record(0x14, b"\x01", b"\x03\x03") + record(0x16, HELLO_13),
        # After a rustls client's real ClientHello, the second flight.
        "real-hello-then-nothing": hello_params(real=True),
        "real-hello-tls13-then-finished-garbage": hello_params((5,), real=True)
        + record(0x14, b"\x01", b"\x03\x03")
        + record(0x17, bytes(53), b"\x03\x03"),
        "real-hello-tls12-then-key-exchange": hello_params(real=True, tls12=True)
        + record(0x16, b"\x10\x00\x00\x21\x20" + X25519_PUBLIC, b"\x03\x03")
        + record(0x14, b"\x01", b"\x03\x03")
        + record(0x16, bytes(40), b"\x03\x03"),
        "real-hello-chacha-then-second-hello": hello_params((100,), real=True, chacha=True) + record(0x16, HELLO_13),
    },
    "admin_http": {
        "get-clients-limit": bytes([255]) + b"GET /clients?limit=2 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer secret\r\n\r\n",
        "post-broadcast": bytes([255])
        + b"POST /broadcast HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        "pipelined-pair": bytes([255])
        + b"GET /clients?limit=2&after=dev%3A1 HTTP/1.1\r\nHost: a\r\n\r\n"
        + b"POST /clients/dev%3A42/messages HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        + b"Content-Length: 13\r\nConnection: close\r\n\r\n{\"text\":\"hi\"}",
        "body-over-limit": bytes([1]) + b"POST /broadcast HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "http10-keep-alive-delete": bytes([255])
        + b"DELETE /clients/dev-1 HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: bearer  t0k\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        "http2-preface": bytes([255]) + b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "chunked": bytes([255]) + b"POST /broadcast HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "conflicting-lengths": bytes([255]) + b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "partial-body": bytes([255]) + b"POST /broadcast HTTP/1.1\r\nContent-Length: 9\r\n\r\npart",
        "query-escapes": bytes([255]) + b"GET /events?%69d=x%20y&bad=%zz&u=%C3%A9 HTTP/1.1\r\n\r\n",
    },
    # What nodes publish to each other (src/cluster/wire.rs), and what the Lua scripts publish.
    "cluster_wire": {
        "push": b"push\ndev-1\nt\nhello",
        "push-binary": b"push\ndev-1\nb\n\x00\n\xff",
        "kick": b"kick\ndev-1\nbye\nnow",
        "replaced": b"replaced\ndev-1\n4294967297",
        "probe": b"probe\n42",
        "request-page": b"req\nn-1\n7\npage\n10\nc:1",
        "request-client": b"req\nn-1\n8\nclient\ndev-1",
        "reply": b'reply\n7\n{"total":0,"clients":[]}',
        "event-online": b"online\nn1\ndev\n1795953639572",
        "event-offline": b"offline\nn1\ndev\nnode_lost\n5",
        "broadcast": b"n1\nb\n\x00\x01\n",
    },
}


def main():
    for target, seeds in SEEDS.items():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
        for name, data in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
