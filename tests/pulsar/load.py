"""Real Pulsar load for the tests, through the official client (PyPI pulsar-client).

Usage: load.py SERVICE_URL RATE SIZE TOPIC...
Publishes RATE messages/s of SIZE bytes, spread round-robin over the topics, and consumes them
all on one shared subscription per topic. Reads commands on stdin, one per line:
  rate N   change the publish rate (messages/s over all topics; 0 pauses)
  reset    forget the publish latencies so far (measure a window without the start-up)
  stop     flush, wait for the last receipts, print the summary and exit (also on EOF)
Prints one JSON object per second on stdout (cumulative counts) and a last one with
"final": true: t (monotonic seconds), sent, acked, failed, received, latency_ms {p50, p99, max} over acked sends.
"""

import json
import sys
import threading
import time

import pulsar


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.received = 0
        self.latencies = []
        self.errors = {}

    def snapshot(self, final=False):
        with self.lock:
            lat = sorted(self.latencies)
            pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None
            return {
                "t": time.monotonic(),
                "final": final,
                "sent": self.sent,
                "acked": self.acked,
                "failed": self.failed,
                "received": self.received,
                "latency_ms": {"p50": pick(0.5), "p99": pick(0.99), "max": lat[-1] if lat else None},
                "errors": dict(self.errors),
            }


def main():
    url, rate, size, topics = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    stats = Stats()
    client = pulsar.Client(url, operation_timeout_seconds=30, connection_timeout_ms=10000)

    def on_message(consumer, msg):
        consumer.acknowledge(msg)
        with stats.lock:
            stats.received += 1

    consumers = [
        client.subscribe(t, "load", consumer_type=pulsar.ConsumerType.Shared,
                         message_listener=on_message)
        for t in topics
    ]
    producers = [
        client.create_producer(t, batching_enabled=False, send_timeout_millis=30000,
                               block_if_queue_full=True, max_pending_messages=10000)
        for t in topics
    ]
    payload = b"x" * size
    state = {"rate": rate, "stop": False}

    def commands():
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["rate"] and len(words) == 2:
                state["rate"] = float(words[1])
            elif words[:1] == ["reset"]:
                with stats.lock:
                    stats.latencies = []
            elif words[:1] == ["stop"]:
                break
        state["stop"] = True

    def report():
        while not state["stop"]:
            print(json.dumps(stats.snapshot()), flush=True)
            time.sleep(1)

    threading.Thread(target=commands, daemon=True).start()
    threading.Thread(target=report, daemon=True).start()

    n = 0
    next_at = time.monotonic()
    while not state["stop"]:
        if state["rate"] <= 0:
            time.sleep(0.05)
            next_at = time.monotonic()
            continue
        now = time.monotonic()
        if next_at > now:
            time.sleep(min(next_at - now, 0.05))
            continue
        started = time.monotonic()

        def done(res, _msg_id, started=started):
            with stats.lock:
                if res == pulsar.Result.Ok:
                    stats.acked += 1
                    stats.latencies.append((time.monotonic() - started) * 1000.0)
                else:
                    stats.failed += 1
                    stats.errors[str(res)] = stats.errors.get(str(res), 0) + 1

        try:
            producers[n % len(producers)].send_async(payload, done)
            with stats.lock:
                stats.sent += 1
        except Exception as e:  # the client refused the send outright
            with stats.lock:
                stats.failed += 1
                stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
        n += 1
        next_at += 1.0 / state["rate"]

    for p in producers:
        try:
            p.flush()
        except Exception:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with stats.lock:
            if stats.received >= stats.acked and stats.acked + stats.failed >= stats.sent:
                break
        time.sleep(0.1)
    print(json.dumps(stats.snapshot(final=True)), flush=True)
    for c in consumers:
        c.close()
    client.close()


if __name__ == "__main__":
    main()
