"""What the Python benchmarks share (bench.py, evict_replay.py, events.py): a free loopback port, and the config
of an edge in front of one origin — one site for localhost and 127.0.0.1, plain HTTP/1.1 on one port, TLS on
another, the admin listener on a third, warnings only in the log."""

import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return f'"{value}"'


def edge_config(name, data_dir, *, tls_port, http_port, admin_port, cert, key, upstream, cache, more=None):
    """The edge's TOML. `cache` and `more` ({section: {key: value}}) are written as given."""
    sections = {"cache": cache, **(more or {})}
    text = f"""name = "{name}"
data_dir = "{data_dir}"
[tls]
listen = "127.0.0.1:{tls_port}"
cert = "{cert}"
key = "{key}"
[http]
listen = "127.0.0.1:{http_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
[[site]]
hosts = ["localhost", "127.0.0.1"]
upstream = "{upstream}"
"""
    for section, values in sections.items():
        text += f"[{section}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    return text + '[log]\nlevel = "warn"\n'
