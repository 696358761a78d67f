"""Check that the server can listen before it loads a model and prints its banner."""

from __future__ import annotations

import errno
import socket

from fastseg.serving.config import ServingConfigError


def ensure_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` the way uvicorn will (SO_REUSEADDR), then release it.

    Port 0 (any free port) is not checked.

    Raises:
        ServingConfigError: the port is taken, or the address cannot be bound (one line, with the fix).
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServingConfigError(f"Cannot listen on {host}:{port}: unknown host ({exc.strerror}); check --host.") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServingConfigError(
                    f"Port {port} on {host} is already in use: stop what listens there or choose another --port."
                ) from exc
            raise ServingConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port.") from exc
