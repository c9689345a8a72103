"""TLS contexts for the load, with the handshake timed as its own phase.

asyncio wraps every TLS connection in ``SSLContext.sslobject_class``; a subclass that notes when
``do_handshake`` is first called and when it first succeeds gives the handshake time of each
connection without touching aiohttp's internals.
"""

from __future__ import annotations

import ssl
import time

from pathprobe.config import TLSOptions
from pathprobe.errors import UsageError


class TimedSSLObject(ssl.SSLObject):
    """An SSLObject that records ``handshake_ns`` (first attempt → completion)."""

    handshake_started_ns: int = -1
    handshake_ns: int = -1

    def do_handshake(self) -> None:
        if self.handshake_started_ns < 0:
            self.handshake_started_ns = time.monotonic_ns()
        super().do_handshake()  # raises SSLWantReadError until the handshake is done
        if self.handshake_ns < 0:
            self.handshake_ns = time.monotonic_ns() - self.handshake_started_ns


def client_context(tls: TLSOptions) -> ssl.SSLContext:
    """A client context honouring ``--cacert``, ``--cert/--key`` and ``--insecure``."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.cacert) if tls.cacert else None)
        if tls.cert is not None:
            ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot load TLS files: {exc}") from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.sslobject_class = TimedSSLObject
    return ctx
