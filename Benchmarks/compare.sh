#!/usr/bin/env bash
# Builds release, then runs in one go: the C socket limit (uds_pingpong.c), the Python peers
# (python_peers.py) and our Benchmarks, and prints one side-by-side table with each metric as a
# ratio to the best peer and to the C limit, plus how busy the machine was.
#
#   bash Benchmarks/compare.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
peers="${PEERS_DIR:-../shared/peers}"
quick="${1:-}"
out=.build/compare
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
read -r total0 idle0 < <(cpu)
"$out/uds_pingpong" -j >"$out/c.json"
python3 "$peers/python_peers.py" --workers 2 --json ${quick:+--quick} >"$out/python.json" 2>"$out/python.log" || true
.build/release/Benchmarks --workers 2 --json ${quick:+--quick} "${ssh_args[@]}" "${slurm_args[@]}" >"$out/swift.json" 2>/dev/null
read -r total1 idle1 < <(cpu)
busy=$(awk -v t="$((total1 - total0))" -v i="$((idle1 - idle0))" 'BEGIN { printf "%.0f", t ? 100 * (t - i) / t : 0 }')

python3 - "$out" "$busy" <<'PY'
import json, sys
out, busy = sys.argv[1], sys.argv[2]
c = json.load(open(out + "/c.json"))
ours = json.load(open(out + "/swift.json"))
try:
    peers = {k: v for k, v in json.load(open(out + "/python.json")).items() if "error" not in v and "skipped" not in v}
except Exception:
    peers = {}
higher = {"throughput_c1_tasks_s", "throughput_c64_tasks_s", "payload_MB_s", "countdown_speedup", "as_completed_tasks_s"}
limit = {
    "latency_p50_us": c["pingpong_p50_us"], "latency_p99_us": c["pingpong_p99_us"],
    "throughput_c1_tasks_s": c["pipelined_batched_msgs_s"], "payload_MB_s": c["bulk_echo_MB_s"],
    "startup_ms": c["posix_spawn_true_us"] / 1000,
}
# The ssh and Slurm workers are compared with our own local worker.
local = {
    prefix + m: m
    for prefix in ("ssh_", "slurm_")
    for m in ("startup_ms", "latency_p50_us", "latency_p99_us")
}
metrics = [m for m in ours if m != "workers"]
cols = ["swift"] + sorted(peers) + ["C limit", "vs best peer", "vs C limit"]
rows = []
for m in metrics:
    row = [m, "%.4g" % ours[m]]
    vals = [peers[p].get(m) for p in sorted(peers)]
    row += ["%.4g" % v if isinstance(v, (int, float)) else "-" for v in vals]
    row.append("%.4g" % limit[m] if m in limit else "-")
    good = [v for v in vals if isinstance(v, (int, float)) and v > 0]
    if good:
        best = max(good) if m in higher else min(good)
        ratio = ours[m] / best if m in higher else best / ours[m]
        row.append("%.2fx better" % ratio if ratio >= 1 else "%.2fx worse" % (1 / ratio))
    else:
        row.append("-")
    if m in limit and ours[m]:
        row.append("%.2fx" % (ours[m] / limit[m]))
    elif m in local:
        row.append("%.1fx local" % (ours[m] / ours[local[m]]))
    else:
        row.append("-")
    rows.append(row)
widths = [max(len(str(r[i])) for r in rows + [["metric"] + cols]) for i in range(len(cols) + 1)]
print("  ".join(h.ljust(w) for h, w in zip(["metric"] + cols, widths)))
for r in rows:
    print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
print("machine busy during the run: %s%% of both cores (others' load included)" % busy)
PY
