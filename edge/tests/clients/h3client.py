#!/usr/bin/env python3
"""HTTP/3 GET with an independent client, for the edge's tests.

  h3client.py --client aioquic|curl --ca CA.pem [--range A-B] [-H 'name: value'] --out FILE URL

Two clients with nothing in common with the server: aioquic (a Python QUIC + HTTP/3 stack) and libcurl with
ngtcp2/nghttp3 (the curl_cffi wheel). Writes the body to FILE and prints one JSON line:
{"status": 200, "protocol": "h3", "size": N, "headers": {...}}; on failure {"error": "..."} and exit status 1.
"""
import argparse
import asyncio
import json
import ssl
import sys
from urllib.parse import urlparse


def with_aioquic(url, ca, headers, timeout):
    from aioquic.asyncio.client import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamReset

    class Client(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.http = H3Connection(self._quic)
            self.status, self.headers, self.body = None, {}, bytearray()
            self.done = asyncio.get_event_loop().create_future()

        def quic_event_received(self, event):
            if isinstance(event, ConnectionTerminated) and not self.done.done():
                self.done.set_exception(ConnectionError(f"connection closed: {event.reason_phrase}"))
            if isinstance(event, StreamReset) and not self.done.done():
                self.done.set_exception(ConnectionError(f"stream reset: code {event.error_code}"))
            for ev in self.http.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    for k, v in ev.headers:
                        if k == b":status":
                            self.status = int(v)
                        else:
                            self.headers[k.decode()] = v.decode(errors="replace")
                elif isinstance(ev, DataReceived):
                    self.body += ev.data
                if getattr(ev, "stream_ended", False) and not self.done.done():
                    self.done.set_result(None)

    async def run():
        u = urlparse(url)
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=u.hostname,
                                   verify_mode=ssl.CERT_REQUIRED)
        config.load_verify_locations(ca)
        async with connect(u.hostname, u.port or 443, configuration=config, create_protocol=Client) as client:
            stream = client._quic.get_next_available_stream_id()
            fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", u.netloc.encode()),
                      (b":path", (u.path or "/").encode() + (b"?" + u.query.encode() if u.query else b""))]
            fields += [(k.lower().encode(), v.encode()) for k, v in headers]
            client.http.send_headers(stream_id=stream, headers=fields, end_stream=True)
            client.transmit()
            await asyncio.wait_for(client.done, timeout)
            return client.status, "h3", client.headers, bytes(client.body)

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
    a = p.parse_args()
    headers = [tuple(s.strip() for s in h.split(":", 1)) for h in a.header]
    if a.range:
        headers.append(("range", f"bytes={a.range}"))
    fetch = with_aioquic if a.client == "aioquic" else with_curl
    try:
        status, protocol, fields, body = fetch(a.url, a.ca, headers, a.timeout)
    except Exception as e:  # every failure is reported, never a partial success
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    with open(a.out, "wb") as f:
        f.write(body)
    print(json.dumps({"status": status, "protocol": protocol, "size": len(body), "headers": fields}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
