#!/usr/bin/env bash
# Builds release, then runs N times (default 5), each run in one go: the C socket limit
# (uds_pingpong.c), the Python peers (python_peers.py) and our Benchmarks. Prints one table with,
# for every metric, the median and the range over the runs of each side and of each ratio (to
# the best peer, to the C limit), computed run by run, and how busy the machine was in each run.
# The machine is shared and noisy: compare ratios and medians, never a best run.
#
#   bash Benchmarks/compare.sh [--runs N] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
peers="${PEERS_DIR:-../shared/peers}"
# Our copy of the Python peers (with the crash storm, and the churn metric under our name).
python_peers="Benchmarks/python_peers.py"
runs=5
quick=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: compare.sh [--runs N] [--quick]" >&2; exit 2 ;;
  esac
done
out=.build/compare
rm -rf "$out/run-"*
mkdir -p "$out"

swift build -c release --product Benchmarks >/dev/null
gcc -O2 -Wall -o "$out/uds_pingpong" "$peers/uds_pingpong.c"

# With an OpenSSH server installed, a worker through ssh to localhost is measured too (the server
# is started per connection in inetd mode with throw-away keys; nothing stays running).
ssh_args=()
if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null; then
  keys="$out/ssh"
  mkdir -p "$keys"
  [ -f "$keys/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$keys/host_key"
  [ -f "$keys/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$keys/client_key"
  cp "$keys/client_key.pub" "$keys/authorized_keys"
  abs=$(cd "$keys" && pwd)
  printf '%s\n' "HostKey $abs/host_key" "AuthorizedKeysFile $abs/authorized_keys" "StrictModes no" "UsePAM no" \
    "PasswordAuthentication no" "PermitRootLogin prohibit-password" "LogLevel ERROR" >"$keys/sshd_config"
  if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd; fi
  ssh_args=(--ssh localhost)
  for arg in -i "$abs/client_key" -o "ProxyCommand=/usr/sbin/sshd -i -f $abs/sshd_config" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR; do
    ssh_args+=(--ssh-option "$arg")
  done
fi

# With Slurm's client installed and a controller answering (Scripts/slurm-up.sh starts a one-node
# cluster), a worker run as an srun job step is measured too.
slurm_args=()
if command -v srun >/dev/null && command -v squeue >/dev/null && squeue --noheader >/dev/null 2>&1; then
  slurm_args=(--slurm)
fi

cpu() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat; }
for run in $(seq 1 "$runs"); do
  dir="$out/run-$run"
  mkdir -p "$dir"
  echo "run $run of $runs..." >&2
  read -r total0 idle0 < <(cpu)
  "$out/uds_pingpong" -j >"$dir/c.json"
  python3 "$python_peers" --workers 2 --json ${quick:+--quick} >"$dir/python.json" 2>"$dir/python.log" || true
  .build/release/Benchmarks --workers 2 --json ${quick:+--quick} "${ssh_args[@]}" "${slurm_args[@]}" >"$dir/swift.json" 2>/dev/null
  read -r total1 idle1 < <(cpu)
  awk -v t="$((total1 - total0))" -v i="$((idle1 - idle0))" 'BEGIN { printf "%.0f\n", t ? 100 * (t - i) / t : 0 }' \
    >"$dir/busy"
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])

def load(path, default):
    try:
        return json.load(open(path))
    except Exception:
        return default

samples = []
for run in range(1, runs + 1):
    d = "%s/run-%d" % (out, run)
    peers = {k: v for k, v in load(d + "/python.json", {}).items() if "error" not in v and "skipped" not in v}
    samples.append((load(d + "/c.json", {}), load(d + "/swift.json", {}), peers, open(d + "/busy").read().strip()))

def spread(values, fmt="%.4g"):
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt % median
    return (fmt + " (" + fmt + "-" + fmt + ")") % (median, min(values), max(values))

higher = {"throughput_c1_tasks_s", "throughput_c64_tasks_s", "payload_MB_s", "countdown_speedup", "as_completed_tasks_s"}
higher |= {"payload_16MiB_MB_s", "payload_256MiB_MB_s"}
higher |= {m for c, ours, peers, busy in samples for m in ours if m.endswith("_s") and "tasks" in m}
higher |= {m for c, ours, peers, busy in samples for m in ours if m.startswith("crashes")}
limit_of = {
    "latency_p50_us": "pingpong_p50_us", "latency_p99_us": "pingpong_p99_us",
    "throughput_c1_tasks_s": "pipelined_batched_msgs_s", "payload_MB_s": "bulk_echo_MB_s",
    "payload_16MiB_MB_s": "bulk_echo_MB_s", "payload_256MiB_MB_s": "bulk_echo_MB_s",
}
def limit(c, m):
    if m == "startup_ms":
        return c.get("posix_spawn_true_us", 0) / 1000 or None
    # A recycled task and a crash each take a new process: the C limit is one process at a time,
    # forked, ended with _exit and reaped (fork_exit_us, from the C program's small process).
    if m in ("max_tasks_per_child_1_tasks_s", "crashes_s"):
        return 1e6 / c["fork_exit_us"] if c.get("fork_exit_us") else None
    return c.get(limit_of[m]) if m in limit_of else None
# The ssh and Slurm workers are compared with our own local worker.
local = {
    prefix + m: m
    for prefix in ("ssh_", "slurm_")
    for m in ("startup_ms", "latency_p50_us", "latency_p99_us")
}
metrics = []
for c, ours, peers, busy in samples:
    metrics += [m for m in ours if m != "workers" and m not in metrics]
peer_names = sorted({p for c, ours, peers, busy in samples for p in peers})
cols = ["swift"] + peer_names + ["C limit", "vs best peer", "vs C limit"]
rows = []
for m in metrics:
    row = [m, spread([s[1].get(m) for s in samples])]
    row += [spread([s[2].get(p, {}).get(m) for s in samples]) for p in peer_names]
    row.append(spread([limit(s[0], m) for s in samples]))
    peer_ratios, limit_ratios = [], []
    for c, ours, peers, busy in samples:
        value = ours.get(m)
        if not isinstance(value, (int, float)) or not value:
            continue
        good = [peers[p].get(m) for p in peers if isinstance(peers[p].get(m), (int, float)) and peers[p].get(m) > 0]
        if good:
            best = max(good) if m in higher else min(good)
            peer_ratios.append(value / best if m in higher else best / value)
        if limit(c, m):
            limit_ratios.append(value / limit(c, m))
        elif m in local and ours.get(local[m]):
            limit_ratios.append(value / ours[local[m]])
    row.append(spread(peer_ratios, "%.2fx"))
    row.append(spread(limit_ratios, "%.2fx") + (" local" if m in local and limit_ratios else ""))
    rows.append(row)
widths = [max(len(str(r[i])) for r in rows + [["metric"] + cols]) for i in range(len(cols) + 1)]
print("median (min-max) over %d runs; 'vs best peer' above 1x means better than the best peer" % runs)
print("  ".join(h.ljust(w) for h, w in zip(["metric"] + cols, widths)))
for r in rows:
    print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
print("machine busy in each run (both cores, others' load included): %s%%" % ", ".join(s[3] for s in samples))
PY
