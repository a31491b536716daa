#!/usr/bin/env python3
"""HTTP/3 GET with an independent client, for the edge's tests.

  h3client.py --client aioquic|curl --ca CA.pem [--range A-B] [-H 'name: value'] [--method M]
              [--zero-rtt] --out FILE URL

Two clients with nothing in common with the server: aioquic (a Python QUIC + HTTP/3 stack) and libcurl with
ngtcp2/nghttp3 (the curl_cffi wheel). Writes the body to FILE and prints one JSON line:
{"status": 200, "protocol": "h3", "size": N, "headers": {...}}; on failure {"error": "..."} and exit status 1.

--zero-rtt (aioquic): a first connection fetches URL to get a session ticket; a second one resumes with it and
sends the request (with --method) in 0-RTT early data, before the handshake completes. The JSON line then also
says whether the server accepted the early data ("early_data_accepted").
"""
import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import urlparse


def with_aioquic(url, ca, headers, timeout, method="GET", zero_rtt=False):
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, StreamReset

    class Client(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.http = H3Connection(self._quic)
            self.status, self.headers, self.body = None, {}, bytearray()
            self.done = asyncio.get_event_loop().create_future()
            # Resolved with whether the server accepted early data (aioquic's own wait_connected() misses a
            # handshake that completes before it is called).
            self.handshake = asyncio.get_event_loop().create_future()

        def quic_event_received(self, event):
            if isinstance(event, HandshakeCompleted) and not self.handshake.done():
                self.handshake.set_result(event.early_data_accepted)
            if isinstance(event, ConnectionTerminated) and not self.done.done():
                self.done.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
            if isinstance(event, StreamReset) and not self.done.done():
                self.done.set_exception(ConnectionError(f"stream reset: code {event.error_code}"))
            for ev in self.http.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    for k, v in ev.headers:
                        if k == b":status":
                            self.status = int(v)
                        else:  # repeated field lines are one list (RFC 9110 §5.3)
                            name, value = k.decode(), v.decode(errors="replace")
                            self.headers[name] = f"{self.headers[name]}, {value}" if name in self.headers else value
                elif isinstance(ev, DataReceived):
                    self.body += ev.data
                if getattr(ev, "stream_ended", False) and not self.done.done():
                    self.done.set_result(None)

    async def fetch(u, config, method, fields_extra, **connect_args):
        async with connect(u.hostname, u.port or 443, configuration=config, create_protocol=Client,
                           **connect_args) as client:
            stream = client._quic.get_next_available_stream_id()
            fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", u.netloc.encode()),
                      (b":path", (u.path or "/").encode() + (b"?" + u.query.encode() if u.query else b""))]
            fields += fields_extra
            client.http.send_headers(stream_id=stream, headers=fields, end_stream=True)
            client.transmit()
            await asyncio.wait_for(client.done, timeout)
            # The early data is known accepted or not once the handshake is done.
            accepted = await asyncio.wait_for(client.handshake, timeout)
            return client.status, "h3", client.headers, bytes(client.body), accepted

    def configuration(u):
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=u.hostname,
                                   verify_mode=ssl.CERT_REQUIRED)
        config.load_verify_locations(ca)
        return config

    async def run():
        u = urlparse(url)
        extra = [(k.lower().encode(), v.encode()) for k, v in headers]
        if not zero_rtt:
            status, protocol, fields, body, _ = await fetch(u, configuration(u), method, extra)
            return status, protocol, fields, body
        tickets = []
        await fetch(u, configuration(u), "GET", [], session_ticket_handler=tickets.append)
        for _ in range(50):  # the ticket follows the handshake; wait for it briefly
            if tickets:
                break
            await asyncio.sleep(0.02)
        if not tickets:
            raise ConnectionError("the server sent no session ticket")
        config = configuration(u)
        config.session_ticket = tickets[-1]
        status, protocol, fields, body, accepted = await fetch(u, config, method, extra, wait_connected=False)
        fields["x-early-data-accepted"] = "1" if accepted else "0"
        return status, protocol, fields, body

    return asyncio.run(run())


def with_curl(url, ca, headers, timeout):
    from curl_cffi import Curl, CurlHttpVersion, CurlInfo, CurlOpt

    curl, body, head = Curl(), bytearray(), []
    curl.setopt(CurlOpt.URL, url.encode())
    curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
    curl.setopt(CurlOpt.CAINFO, ca.encode())
    curl.setopt(CurlOpt.TIMEOUT, int(timeout))
    curl.setopt(CurlOpt.HTTPHEADER, [f"{k}: {v}".encode() for k, v in headers])
    curl.setopt(CurlOpt.WRITEFUNCTION, lambda chunk: body.extend(chunk) or len(chunk))
    curl.setopt(CurlOpt.HEADERFUNCTION, lambda line: head.append(line) or len(line))
    curl.perform()
    protocol = {30: "h3", 3: "h2", 2: "http/1.1"}.get(curl.getinfo(CurlInfo.HTTP_VERSION), "?")
    fields = {}
    for line in head:
        name, sep, value = line.decode(errors="replace").partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return curl.getinfo(CurlInfo.RESPONSE_CODE), protocol, fields, bytes(body)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("--client", choices=["aioquic", "curl"], required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--range")
    p.add_argument("-H", "--header", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--method", default="GET")
    p.add_argument("--zero-rtt", action="store_true")
    a = p.parse_args()
    headers = [tuple(s.strip() for s in h.split(":", 1)) for h in a.header]
    if a.range:
        headers.append(("range", f"bytes={a.range}"))
    try:
        if a.client == "aioquic":
            status, protocol, fields, body = with_aioquic(a.url, a.ca, headers, a.timeout, a.method, a.zero_rtt)
        else:
            status, protocol, fields, body = with_curl(a.url, a.ca, headers, a.timeout)
    except Exception as e:  # every failure is reported, never a partial success
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    with open(a.out, "wb") as f:
        f.write(body)
    print(json.dumps({"status": status, "protocol": protocol, "size": len(body), "headers": fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
