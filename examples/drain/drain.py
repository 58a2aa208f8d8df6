#!/usr/bin/env python3
"""A worker that drains when herder announces its stop (`stop.notify = true`),
asking for more time with sd_notify EXTEND_TIMEOUT_USEC while it does.

herder writes one line on the pipe whose descriptor is in HERD_EVENTS_FD:
    stop reason=shutdown deadline_ms=1795000000123 timeout_ms=950
and listens for sd_notify datagrams on NOTIFY_SOCKET. `EXTEND_TIMEOUT_USEC=N`
moves SIGKILL to N microseconds from now (never past the shutdown budget), so a
service can take longer than its `stop.timeout` as long as it keeps saying so.
"""
import os
import signal
import socket
import sys
import time


def notify(message):
    """Sends one sd_notify datagram (abstract socket names start with '@')."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())


def log(text):
    print(f"drain.py: {text}", flush=True)


# The event starts the drain; the SIGTERM that follows must not cut it short.
signal.signal(signal.SIGTERM, lambda *_: log("SIGTERM; still draining"))

events = os.fdopen(int(os.environ["HERD_EVENTS_FD"]), "r")
log("working")
line = events.readline().strip()
if not line:
    log("herder went away without a stop event")
    sys.exit(1)
fields = dict(kv.split("=", 1) for kv in line.split()[1:])
log(f"event: {line}")
notify("STOPPING=1")
# Draining takes 2 s, longer than the 1 s herder gave: ask for 1 s at a time.
for step in range(4):
    notify("EXTEND_TIMEOUT_USEC=1000000")
    time.sleep(0.5)
    log(f"drained part {step + 1} of 4 (reason {fields.get('reason')})")
log("drained; exiting")
sys.exit(0)
