#!/bin/bash
# One diagnosis of a stack the testbed does not have: waitress (plain WSGI, no Server-Timing)
# behind caddy (proxy) behind lighttpd (load balancer), no timing headers anywhere.
#
#   run.sh NAME RATE TARGET_P99_MS [VAR=VALUE ...]     (VARs go to app.py, see its docstring)
#   CADDY_QUOTA_US / LIGHTTPD_QUOTA_US: a CPU quota per 100 ms for that hop (a sidecar's limit)
#   SEED: --seed of the diagnosis
#
# Needs: caddy and lighttpd (apt), waitress (pip install --target "$WORK/site" waitress), root for
# the CPU quotas (cgroup v1). Servers on CPU 1, pathprobe on CPU 0; every process it starts is
# stopped by PID at exit. Output: $WORK/out-NAME/ and $WORK/NAME.stdout.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
WORK=${WORK:-/tmp/pathprobe-unseen}
name=$1; rate=$2; target=$3; shift 3
mkdir -p "$WORK"; out=$WORK/out-$name; rm -rf "$out"
sed "s#@DIR@#$WORK#g" "$here/lighttpd.conf.in" > "$WORK/lighttpd.conf"
pids=()
cgroups=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  sleep 0.3
  for d in "${cgroups[@]}"; do rmdir "$d" 2>/dev/null; done
}
trap cleanup EXIT
limit() {  # limit NAME PID QUOTA_US
  [ -z "$3" ] && return
  local d=/sys/fs/cgroup/cpu/pathprobe_unseen_$1
  mkdir -p "$d" && cgroups+=("$d")
  echo 100000 > "$d/cpu.cfs_period_us"; echo "$3" > "$d/cpu.cfs_quota_us"; echo "$2" > "$d/cgroup.procs"
}
py=$repo/.venv/bin/python
export PYTHONPATH=$WORK/site
env "$@" taskset -c 1 "$py" "$here/feature_store.py" & pids+=($!)
env "$@" taskset -c 1 "$py" "$here/app.py" & app=$!; pids+=($app)
taskset -c 1 caddy run --config "$here/Caddyfile" --adapter caddyfile > "$WORK/caddy.log" 2>&1 &
pids+=($!); limit caddy $! "${CADDY_QUOTA_US:-}"
taskset -c 1 lighttpd -D -f "$WORK/lighttpd.conf" > "$WORK/lighttpd.log" 2>&1 &
pids+=($!); limit lighttpd $! "${LIGHTTPD_QUOTA_US:-}"
"$py" -c "from PIL import Image; Image.new('RGB', (800, 600), 'gray').save('$WORK/probe.jpg')"
for _ in $(seq 300); do  # up when a request passes every hop (the forest trains first)
  curl -sf -o /dev/null --data-binary @"$WORK/probe.jpg" http://127.0.0.1:8103/ && break
  sleep 0.2
done
taskset -c 0 "$repo/.venv/bin/pathprobe" diagnose --path direct=http://127.0.0.1:8101/ \
  --path proxy=http://127.0.0.1:8102/ --path lb=http://127.0.0.1:8103/ \
  --payload image:600-1200 --rate "$rate" --duration 8 --seed "${SEED:-1}" \
  --target-p99 "$target" --server-pid "$app" --out "$out" > "$WORK/$name.stdout" 2>&1
echo "$name: exit $?"
"$py" - "$out/report.json" <<'PY'
import json, sys
verdict = json.load(open(sys.argv[1]))["verdict"]
print(verdict["bottleneck"], "|", verdict["summary"])
PY
