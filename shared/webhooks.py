"""Webhooks: the endpoints operators register, the events sent to them, their signatures,
and the check that keeps a webhook from reaching what it must not (SSRF).

Endpoints come from ``WEBHOOKS`` (inline JSON) or ``WEBHOOKS_FILE`` (YAML or JSON)::

    endpoints:
      - url: https://hooks.example.com/llm
        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw   # Standard Webhooks: whsec_ + base64
        events: [batch.completed, batch.failed, job.succeeded]  # omitted: every event

Events are OpenAI's (``{"object": "event", "id", "type", "created_at", "data": {"id"}}``)
and signed as the Standard Webhooks specification says (``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``), so OpenAI's
SDK (``client.webhooks.unwrap``) and the ``standardwebhooks`` library verify them.
Each delivery is a task on the broker (tasks/webhook_delivery.py); an event's id (its
``webhook-id``) is the same on every try, and for the same event sent twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from shared.config import Config

BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.cancelled", "batch.expired")
# Jobs submitted without waiting (wait=0, Prefer: respond-async).
JOB_EVENTS = ("job.succeeded", "job.failed", "job.cancelled")
# A background response's end (/v1/responses), as OpenAI sends it.
RESPONSE_EVENTS = ("response.completed", "response.failed", "response.incomplete", "response.cancelled")
EVENT_TYPES = frozenset(BATCH_EVENTS + JOB_EVENTS + RESPONSE_EVENTS)


class WebhookConfigError(ValueError):
    """The webhook endpoints are not configured right (the process does not start)."""


class UnsafeUrl(Exception):
    """A webhook URL the gateway refuses to call (private or loopback address, bad scheme)."""


@dataclass(frozen=True)
class Endpoint:
    """One registered receiver."""

    name: str  # how deliveries, logs and metrics name it (its URL without query unless named): no secret
    url: str
    secret: str  # whsec_...
    events: frozenset[str]

    @property
    def key(self) -> bytes:
        return base64.b64decode(self.secret.removeprefix("whsec_"))


def load_endpoints(config: Config) -> list[Endpoint]:
    """The endpoints of WEBHOOKS / WEBHOOKS_FILE (none when neither is set)."""
    if config.webhooks_file:
        text = Path(config.webhooks_file).read_text()
        source = config.webhooks_file
    elif config.webhooks:
        text = config.webhooks.get_secret_value()
        source = "WEBHOOKS"
    else:
        return []
    try:
        given = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebhookConfigError(f"{source}: not YAML or JSON: {exc}") from None
    entries = given.get("endpoints") if isinstance(given, dict) else given
    if not isinstance(entries, list):
        raise WebhookConfigError(f"{source}: a list of endpoints (or {{endpoints: [...]}}) is expected")
    endpoints = [_endpoint(entry, n, source, config.webhook_allow_private) for n, entry in enumerate(entries)]
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise WebhookConfigError(
            f"{source}: two endpoints have the same name (or URL, its query left out): give each a name"
        )
    return endpoints


def _endpoint(entry: Any, n: int, source: str, allow_private: bool) -> Endpoint:
    where = f"{source}: endpoint {n}"
    if not isinstance(entry, dict):
        raise WebhookConfigError(f"{where}: an object with url, secret and events is expected")
    url, secret = entry.get("url"), entry.get("secret")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise WebhookConfigError(f"{where}: url must be an http(s) URL")
    if urlsplit(url).username is not None or urlsplit(url).password is not None:
        # They would be shown wherever the endpoint is named (metrics, logs, dead
        # letters), and are never sent: a receiver checks the signature instead.
        raise WebhookConfigError(f"{where}: url holds a user or password (user:password@); remove them")
    host = urlsplit(url).hostname or ""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not allow_private and not _public(literal):
        raise WebhookConfigError(f"{where}: {host} is a private or loopback address (WEBHOOK_ALLOW_PRIVATE)")
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise WebhookConfigError(f"{where}: secret must be a Standard Webhooks secret: 'whsec_' + base64")
    try:
        if len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) < 16:
            raise WebhookConfigError(f"{where}: secret must hold at least 16 bytes")
    except binascii.Error:
        raise WebhookConfigError(f"{where}: secret is not base64 after 'whsec_'") from None
    events = entry.get("events") or sorted(EVENT_TYPES)
    unknown = set(events) - EVENT_TYPES if isinstance(events, list) else {"(not a list)"}
    if unknown:
        raise WebhookConfigError(f"{where}: unknown events {sorted(unknown)}; known: {sorted(EVENT_TYPES)}")
    name = entry.get("name") or url_in_logs(url)
    return Endpoint(str(name), url, secret, frozenset(events))


def url_in_logs(url: str) -> str:
    """A URL as logs, metrics and dead letters name it: without user, password, query or
    fragment (a receiver's token often travels in its query: ``?token=...``)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))


def event(kind: str, object_id: str, now: float | None = None) -> dict[str, Any]:
    """An event in OpenAI's format. Its id depends on `kind` and `object_id` alone: the
    same event made twice (a batch finalized again after a restart) has the same id."""
    digest = hashlib.sha256(f"{kind}:{object_id}".encode()).hexdigest()[:32]
    return {
        "object": "event",
        "id": f"evt_{digest}",
        "type": kind,
        "created_at": int(now if now is not None else time.time()),
        "data": {"id": object_id},
    }


def signed_headers(endpoint: Endpoint, event_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one try of a delivery (the timestamp is the try's)."""
    timestamp = str(int(now if now is not None else time.time()))
    signed = f"{event_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(endpoint.key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": event_id, "webhook-timestamp": timestamp, "webhook-signature": f"v1,{signature}"}


# IPv6 prefixes whose addresses carry an IPv4 address a gateway or host may forward to:
# NAT64 (RFC 6052's well-known 64:ff9b::/96, and the local-use 64:ff9b:1::/48) in the
# last 32 bits, and 6to4 (2002::/16) in bits 16-48.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
# IPv4-compatible addresses (::a.b.c.d, deprecated, still routed by some stacks) and
# SIIT's IPv4-translated ones (::ffff:0:a.b.c.d, RFC 2765).
_COMPATIBLE = (ipaddress.IPv6Network("::/96"), ipaddress.IPv6Network("::ffff:0:0:0/96"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in (*_NAT64, *_COMPATIBLE)) and int(address) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        carried = embedded_ipv4(address)
        if carried is not None:
            # Judged by the IPv4 address it reaches: 64:ff9b::a9fe:a9fe is 169.254.169.254.
            return carried.is_global and not carried.is_multicast
    return address.is_global and not address.is_multicast


def resolve(url: str, allow_private: bool) -> str:
    """The address to connect to for `url`: every address its host resolves to must be
    public, unless private ones are allowed (WEBHOOK_ALLOW_PRIVATE). The caller connects
    to this address itself, so a second lookup cannot answer differently (DNS rebinding)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl(f"{url}: not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeUrl(f"{parts.hostname}: could not be resolved ({exc})") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    if not allow_private:
        for address in addresses:
            if not _public(address):
                raise UnsafeUrl(
                    f"{parts.hostname} resolves to {address}, a private, loopback or reserved address:"
                    " refused (WEBHOOK_ALLOW_PRIVATE=true allows it)"
                )
    return str(addresses[0])


def dumps(found: dict[str, Any]) -> bytes:
    """An event's body, as sent and signed."""
    return json.dumps(found, separators=(",", ":")).encode()


def emit(app: Any, config: Config, endpoints: list[Endpoint], kind: str, object_id: str) -> int:
    """Queue `kind`'s event about `object_id` for each endpoint that takes it (on the
    Celery app `app`, blocking); how many were queued. The delivery's task id is the
    same for the same event and endpoint."""
    found = event(kind, object_id)
    queued = 0
    for endpoint in endpoints:
        if kind not in endpoint.events:
            continue
        which = hashlib.sha256(endpoint.name.encode()).hexdigest()[:12]
        app.send_task(
            "webhook.deliver",
            args=({"endpoint": endpoint.name, "event": found, "first_at": time.time()},),
            task_id=f"{found['id']}-{which}",
            queue=config.webhook_queue,
            retry=True,
        )
        queued += 1
    return queued
