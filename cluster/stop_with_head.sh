#!/usr/bin/env bash
# Usage: stop_with_head.sh HEAD_IP:PORT   (onprem.yaml runs it on each worker after `ray start`)
#
# Waits while the Ray head's GCS port answers, then runs `ray stop` on this machine. On machines
# you have, `ray down` runs `ray stop` on the head only: a worker's raylet exits by itself a
# minute later, but Ray 2.60 leaves its log monitor (log_monitor.py) running for ever. The head
# counts as gone after 3 failed connections 10 s apart (Ray's own raylet waits 60 s), so a
# short network hiccup stops nothing. One watcher per machine; it ends after its `ray stop`.
set -u
if [[ $# -ne 1 || $1 != *:* ]]; then
    echo "usage: stop_with_head.sh HEAD_IP:PORT" >&2
    exit 2
fi
head=${1%:*} port=${1##*:}
pidfile=/tmp/tune-sweeps-stop-with-head.pid
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    exit 0  # a watcher already runs here
fi
echo $$ > "$pidfile"

failures=0
while ((failures < 3)); do
    sleep 10
    if (exec 3<>"/dev/tcp/$head/$port") 2>/dev/null; then
        failures=0
    else
        failures=$((failures + 1))
    fi
done
echo "$(date '+%F %T') the Ray head at $head:$port is gone: ray stop"
rm -f "$pidfile"
ray stop
