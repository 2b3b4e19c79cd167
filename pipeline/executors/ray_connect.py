"""Finding a Ray head: parse `--address` and probe it, so a wrong address fails in seconds, not minutes."""

from __future__ import annotations

import socket

from pipeline.errors import PipelineError

DEFAULT_GCS_PORT = 6379


def _split_address(address: str) -> tuple[str, str]:
    """(host, port text) of HOST:PORT, [IPV6]:PORT or a host alone (the GCS port by default); an IPv6 host comes
    without its brackets (Python's sockets want it bare, where Ray wants it bracketed)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", rest  # refused as not HOST:PORT
        return host, rest[1:] if rest else str(DEFAULT_GCS_PORT)
    if hostport.count(":") > 1:
        return "", hostport  # a bare IPv6 address: which colon starts the port? Refused, with the bracketed form.
    host, sep, port_text = hostport.rpartition(":")
    if not sep:
        host, port_text = hostport, str(DEFAULT_GCS_PORT)
    return host, port_text


def is_loopback(address: str) -> bool:
    return _split_address(address)[0] in ("127.0.0.1", "localhost", "::1")


def probe(address: str, timeout_s: float, given_by: str = "--address") -> None:
    """Fail in seconds, not minutes, when nothing listens at the address (ray.init would keep retrying).

    `given_by` names where the address came from (the option, or $RAY_ADDRESS), for the hint."""
    host, port_text = _split_address(address)
    try:
        port = int(port_text)
        if not host or not 0 < port < 65536:
            raise ValueError(port_text)
    except ValueError:
        raise PipelineError(
            f"Ray address '{address}' (from {given_by}) is not HOST:PORT",
            hint="e.g. 127.0.0.1:6379, or [::1]:6379 for an IPv6 host",
        ) from None
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout_s, 5.0))
    except OSError as exc:
        raise PipelineError(
            f"no Ray cluster answers at {shown} ({exc.strerror or exc})",
            hint=f"start one with `ray start --head --port PORT`, or check {given_by}",
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
            f"{shown} accepts connections but does not answer as a Ray head within {timeout_s:g}s",
            hint=f"pass the GCS port of the head node in {given_by} (`ray start --head --port PORT`, default 6379)",
        )


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# A frame header: length 0, type 4 (SETTINGS), no flags, stream 0.
_HTTP2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
