#!/usr/bin/env python3
"""A producer and a consumer of choreo events in Python, with nothing but nats-py.

Publishes one trip request to a running travel node (`choreo node --example travel`, or the
demo) as a CloudEvent through the ingress, in structured mode (the JSON event format) or in binary mode with JSON
data, then reads the trip's history from the log until its saga ended, and prints the outcome.
No choreo extension is set: the subject names the correlation, and the request is a root.
The wire contract is schemas/docs/wire.md.

    python3 examples/python/trip.py --nats nats://127.0.0.1:4222 --trip trip-py-1
"""

import argparse
import asyncio
import datetime
import json
import sys

import nats
from nats.js.api import DeliverPolicy

ENDS = {
    "choreo.saga.completed": "completed",
    "choreo.saga.compensated": "compensated",
    "choreo.saga.faulted": "faulted",
}


def request(trip: str, mode: str):
    """The headers and body of a trip request in the given content mode."""
    event_id = f"{trip}/request"  # any string: it need not be a UUID
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    data = {"trip": trip, "index": 0, "seed": 1, "cents": 12000}
    attributes = {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:python-example",
        "type": "trip.requested.v1",
        "time": now,
        "datacontenttype": "application/json",
    }
    if mode == "structured":
        body = json.dumps({**attributes, "data": data}).encode()
        headers = {"Content-Type": "application/cloudevents+json"}
    else:
        body = json.dumps(data).encode()
        headers = {f"ce-{k}": v for k, v in attributes.items()}
    headers["Nats-Msg-Id"] = event_id  # a retried publish is dropped by JetStream
    return headers, body


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--namespace", default="choreo")
    ap.add_argument("--trip", required=True, help="trip id, also the correlation")
    ap.add_argument("--mode", choices=["structured", "binary"], default="structured")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the end")
    a = ap.parse_args()

    nc = await nats.connect(a.nats)
    js = nc.jetstream()
    # The ingress: the server places the event at its partition; no hash to compute here.
    subject = f"{a.namespace}.in.{a.trip}.trip.requested.v1"
    headers, body = request(a.trip, a.mode)
    ack = await js.publish(subject, body, headers=headers)
    print(f"published trip {a.trip} ({a.mode} mode) on {subject}, sequence {ack.seq}")

    # The consumer: the correlation's history, in log order, until the saga's end.
    sub = await js.subscribe(
        f"{a.namespace}.evt.*.{a.trip}.>",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + a.timeout
    outcome = None
    try:
        while outcome is None:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            hdrs = msg.headers or {}
            ty = hdrs.get("ce-type", "?")
            # A node run with --data-format json writes JSON data; msgpack needs a decoder.
            if hdrs.get("ce-datacontenttype", "").startswith("application/json"):
                print(f"  {ty} {json.dumps(json.loads(msg.data), sort_keys=True)}")
            else:
                print(f"  {ty} ({hdrs.get('ce-datacontenttype', '?')} data)")
            outcome = ENDS.get(ty)
    finally:
        await sub.unsubscribe()
        await nc.close()
    if outcome is None:
        print(f"trip {a.trip}: no end within {a.timeout} s", file=sys.stderr)
        return 1
    print(f"trip {a.trip}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
