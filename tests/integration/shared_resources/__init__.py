"""Every resource tenants share, each asked "as whom?".

A gateway is only as safe as its most shared part. Each resource below is shared by
every tenant of a deployment; for each, a module of this folder runs a hostile tenant
(or a caller without a key) beside a normal tenant and checks that the normal one's
answers, its place in line (what its latency is made of, counted rather than timed)
and its bill do not change. A part that adds a shared resource adds it here, with its
module, in the same change: tests/unit/test_shared_resources_listed.py fails until it
has one, and until docs/tenants.md's table of shared resources names it.
"""

from __future__ import annotations

# The resource as docs/tenants.md names it -> the module of this folder that tries it.
SHARED_RESOURCES: dict[str, str] = {
    "queue turns": "test_queue_turns",
    "server slots": "test_server_slots",
    "coalesced calls": "test_coalesced_calls",
    "prefix affinity": "test_prefix_affinity",
    "stream readers": "test_stream_readers",
    "Redis records": "test_redis_records",
    "in-flight places": "test_in_flight_places",
    "probes": "test_probes",
    "connections": "test_connections",
    "file store": "test_file_store",
    "batch lines": "test_batch_lines",
    "token counts": "test_token_counts",
}
