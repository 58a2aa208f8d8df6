#!/usr/bin/env bash
# A worker that drains when herder announces its stop (`stop.notify = true`).
#
# herder writes one line on the pipe whose descriptor is in HERD_EVENTS_FD, before
# it sends the stop signal:
#   stop reason=shutdown deadline_ms=1795000000123 timeout_ms=2950
# reason: requested, shutdown, dependency, restart, reload or failure;
# deadline_ms: when SIGKILL comes, in milliseconds since the Unix epoch;
# timeout_ms: the same, counted from the moment the line was written.
set -u

# The event starts the drain; the SIGTERM that follows must not cut it short, so it
# is ignored (by the jobs this script runs, too). SIGKILL at the deadline still
# bounds the drain.
trap '' TERM

jobs_done=0
partial=""
while :; do
    # Wait for the event for up to 0.1 s at a time; in between, do a unit of work.
    read -r -t 0.1 -u "$HERD_EVENTS_FD" line
    status=$?
    if [ "$status" -eq 0 ]; then
        event="$partial$line"
        break
    fi
    if [ "$status" -le 128 ]; then
        echo "drain.sh: the event pipe closed: herder has gone"
        exit 1
    fi
    # Timed out. bash reads a pipe byte by byte, so the timeout may have cut a line
    # in two: keep what arrived, the rest comes with the next read.
    partial="$partial$line"
    jobs_done=$((jobs_done + 1))
done
echo "drain.sh: event: $event"
timeout_ms=${event##*timeout_ms=}
echo "drain.sh: refusing new work after $jobs_done jobs; ${timeout_ms} ms to finish what is in flight"
for job in 1 2 3; do
    sleep 0.1
    echo "drain.sh: in-flight job $job finished"
done
echo "drain.sh: drained; exiting"
exit 0
