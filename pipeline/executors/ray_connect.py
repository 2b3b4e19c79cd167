"""Finding a Ray head: parse `--address` and probe it, so a wrong address fails in seconds, not minutes."""

from __future__ import annotations

import socket

from pipeline.errors import PipelineError

DEFAULT_GCS_PORT = 6379


def _split_address(address: str) -> tuple[str, str]:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port_text = hostport.rpartition(":")
    if not sep:
        host, port_text = hostport, str(DEFAULT_GCS_PORT)
    return host, port_text


def host_of(address: str) -> str:
    return _split_address(address)[0]


def probe(address: str, timeout_s: float) -> None:
    """Fail in seconds, not minutes, when nothing listens at the address (ray.init would keep retrying)."""
    host, port_text = _split_address(address)
    try:
        port = int(port_text)
        if not host or not 0 < port < 65536:
            raise ValueError(port_text)
    except ValueError:
        raise PipelineError(
            f"Ray address '{address}' is not HOST:PORT", hint="e.g. --address 127.0.0.1:6379"
        ) from None
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout_s, 5.0))
    except OSError as exc:
        raise PipelineError(
            f"no Ray cluster answers at {host}:{port} ({exc.strerror or exc})",
            hint="start one with `ray start --head --port PORT`, or check --address",
        ) from None
    # Something listens. A Ray head speaks gRPC (HTTP/2) there, and an HTTP/2 server answers the
    # client preface with a SETTINGS frame; anything else would leave ray.init retrying for minutes.
    with sock:
        try:
            sock.settimeout(timeout_s)
            sock.sendall(_HTTP2_PREFACE + _HTTP2_EMPTY_SETTINGS)
            header = b""
            while len(header) < 9:
                chunk = sock.recv(9 - len(header))
                if not chunk:
                    break
                header += chunk
        except OSError:
            header = b""
    if len(header) < 9 or header[3] != 0x04:
        raise PipelineError(
            f"{host}:{port} accepts connections but does not answer as a Ray head within {timeout_s:g}s",
            hint="pass the GCS port of the head node (`ray start --head --port PORT`, default 6379)",
        )


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# A frame header: length 0, type 4 (SETTINGS), no flags, stream 0.
_HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
