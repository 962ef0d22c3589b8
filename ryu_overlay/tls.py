"""OpenFlow over TLS: each switch's certificate must name the hypervisor that owns its datapath id.

Ryu serves TLS when given ``--ctl-privkey``, ``--ctl-cert`` and ``--ca-certs`` (with the last,
a switch must present a certificate signed by one of those CAs), on ``--ofp-ssl-listen-port``.
Ryu 4.34's listener (``ryu.lib.hub.StreamServer``) consumes its TLS settings on the first
connection and wraps every later one without a certificate, so ``install`` replaces it, in
Ryu's controller module, by one that wraps every connection with one context.

Open vSwitch's ``ovs-pki`` names a certificate ``CN=<name> id:<uuid>``; ``names`` accepts that
form as well as a plain common name.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from .compat import framework_module

LOG = logging.getLogger("ryu_overlay.tls")


def common_name(sock: Any) -> str | None:
    """The subject common name of the certificate the peer of ``sock`` presented, if any."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        cert = getpeercert()
    except (ValueError, OSError):
        return None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def names(cn: str, expected: str) -> bool:
    """Whether a certificate's common name ``cn`` names ``expected`` (plainly, or as ovs-pki does)."""
    return cn == expected or cn.startswith(expected + " id:")


def install() -> None:
    """Make Ryu's OpenFlow listener wrap every connection with the same TLS context (idempotent)."""
    controller = framework_module("controller.controller")
    base = framework_module("lib.hub").StreamServer
    if getattr(controller.StreamServer, "one_context", False):
        return

    class StreamServer(base):  # type: ignore[misc,valid-type]
        one_context = True

        def __init__(self, listen_info: Any, handle: Any = None, backlog: Any = None, spawn: str = "default",
                     **ssl_args: Any) -> None:
            super().__init__(listen_info, handle, backlog, spawn)
            if not ssl_args:
                return
            ctx = ssl_args.get("ssl_ctx") or ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(ssl_args["certfile"], ssl_args["keyfile"])
            if ssl_args.get("ca_certs"):
                ctx.load_verify_locations(ssl_args["ca_certs"])
                ctx.verify_mode = ssl.CERT_REQUIRED

            def wrap_and_handle(sock: Any, addr: Any) -> None:
                try:
                    tls = ctx.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    LOG.warning("TLS handshake with %s failed: %s", addr, exc)
                    sock.close()
                    return
                handle(tls, addr)

            self.handle = wrap_and_handle

    controller.StreamServer = StreamServer  # type: ignore[attr-defined]
