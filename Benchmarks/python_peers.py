#!/usr/bin/env python3
"""python_peers.py - side-by-side micro-benchmarks of Python process pools.

Peers (each skipped cleanly if it cannot be imported):
  ppe     concurrent.futures.ProcessPoolExecutor      (stdlib)
  mp_pool multiprocessing.Pool                        (stdlib)
  loky    loky.get_reusable_executor                  (pip install loky)
  pebble  pebble.ProcessPool                          (pip install pebble)

Metrics (per peer, pool of --workers processes; timings use time.perf_counter):
  startup_ms / shutdown_ms   new pool -> first result of identity(1); then the
                             graceful shutdown; median of 10 fresh pools
  latency_p50_us / _p99_us   submit(identity, i).result() one at a time,
                             2000 round trips after 200 warm-up (nearest rank)
  throughput_c1_tasks_s      map(identity, 20,000 ints, chunksize=1)
  throughput_c64_tasks_s     map(identity, 200,000 ints, chunksize=64)
  payload_MB_s               echo of a 1 MiB bytes object, 200 sequential
                             submit/result round trips; bytes counted =
                             200 * 2 * 1 MiB (request and reply each once),
                             MB = 10**6 bytes
  countdown_*                countdown(n) (`while n > 0: n -= 1`) with
                             COUNT=10,000,000 split into --workers equal parts
                             via map(chunksize=1) vs countdown(COUNT) serially
                             in the parent; median of 3 each; speedup =
                             serial / parallel
  as_completed_tasks_s       2000 identity tasks submitted, consumed in
                             completion order (mp.Pool has no as_completed:
                             apply_async + callback into a SimpleQueue)
  max_tasks_per_child_1_tasks_s
                             100 identity tasks, every one in a fresh worker
                             (max_tasks_per_child=1, maxtasksperchild=1,
                             max_tasks=1; loky has no such setting)
  crashes_s                  90 tasks of which every third kills its worker
                             (SIGKILL): crashed tasks per second. Where a crash
                             breaks the pool (ProcessPoolExecutor, loky) a new
                             pool runs the tasks left, as its user must; mp.Pool
                             is not measured (a task whose worker dies never
                             completes)

This is ProcessPool's copy of ../shared/peers/python_peers.py (Benchmarks/compare.sh runs it):
the churn metric is named as in Benchmarks/main.swift, and crashes_s is added.

Fairness notes:
  * Every peer runs in its own fresh interpreter (a subprocess of this script)
    so no peer inherits threads, imports or children from another peer.
  * The worker functions are imported from this file as module
    'python_peers', so every peer pickles them by reference (cloudpickle, used
    by loky, would otherwise pickle __main__ functions by value).
  * Start method: stdlib peers and pebble use --start-method (default: the
    platform default, 'fork' on Linux for Python < 3.14); loky cannot use
    'fork' for its reusable executor and uses --loky-context (default: loky's
    own 'loky', i.e. fork+exec of a fresh interpreter).

Usage:
  python3 python_peers.py [--workers 2] [--json] [--peers ppe,mp_pool,loky,pebble]
                          [--start-method fork|spawn|forkserver]
                          [--loky-context loky|loky_init_main|spawn|forkserver]
                          [--repeat 3] [--wait-idle SECONDS] [--quick]
The map, payload and as_completed metrics are the median of --repeat runs.
Per peer the JSON also holds wall_s, background_cpu_pct (CPU used by other
processes on the machine while the peer ran, % of all CPUs) and steal_pct,
as noise indicators.
With --json, stdout carries only the JSON object {peer: {metric: value}}
and the human table goes to stderr. Python 3.9+, stdlib only.
"""

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import time

MODULE_NAME = "python_peers"

# --------------------------------------------------------------------------
# Worker-side functions (module level so they pickle by reference).
# --------------------------------------------------------------------------


def identity(x):
    return x


def crash_every_third(x):
    """Kills its own worker (no core dump, no cleanup) when x is a multiple of 3."""
    if x % 3 == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def countdown(n):
    while n > 0:
        n -= 1
    return n


# --------------------------------------------------------------------------
# Peer adapters: create / call / map / as_completed / shutdown
# --------------------------------------------------------------------------


class Peer:
    key = ""
    label = ""
    module = None  # import name needed, or None for stdlib

    def __init__(self, workers, start_method, loky_context):
        self.workers = workers
        self.start_method = start_method
        self.loky_context = loky_context

    def setup(self):
        """Import what is needed; return a version string."""
        raise NotImplementedError

    def start_method_name(self):
        raise NotImplementedError

    def create(self):
        raise NotImplementedError

    def shutdown(self, pool):
        raise NotImplementedError

    def call(self, pool, fn, arg):
        raise NotImplementedError

    def map(self, pool, fn, items, chunksize):
        raise NotImplementedError

    def as_completed(self, pool, fn, items):
        raise NotImplementedError

    def create_churn(self):
        """A pool whose workers each run one task and are replaced (max tasks per child = 1),
        or None where the peer has no such setting."""
        return None

    def run_all(self, pool, fn, items):
        """Submit every item at once and wait for all results (input order)."""
        return self.map(pool, fn, items, 1)

    # How a crashed worker shows: "isolated" (only its task fails, the pool goes on), "breaks"
    # (every pending task fails and the pool is unusable), or None (not measurable).
    crash_mode = None
    broken_errors = ()

    def submit(self, pool, fn, arg):
        """A future of fn(arg) (concurrent.futures style)."""
        return pool.submit(fn, arg)

    def crash_storm(self, fn, items, crashes):
        """Runs every item with all of them submitted at once; returns the crashed items. A pool
        that a crash breaks is replaced, with the items left (those not known to have crashed)
        submitted again to the new one; per round one crash is counted, the first of the
        crashing items that failed."""
        left, crashed = list(items), []
        while left:
            pool = self.create()
            try:
                futs = []
                for x in left:
                    try:
                        futs.append((x, self.submit(pool, fn, x)))
                    except self.broken_errors:  # broke while the items were being submitted
                        futs.append((x, None))
                failed = []
                for x, f in futs:
                    try:
                        if f is None:
                            raise self.broken_errors[0]()
                        if f.result() != x:
                            raise AssertionError("bad crash storm result")
                    except self.broken_errors:
                        failed.append(x)
            finally:
                try:
                    self.shutdown(pool)
                except Exception:
                    pass
            if self.crash_mode == "isolated":
                crashed += failed
                break
            victims = [x for x in failed if crashes(x)]
            if not victims:
                raise AssertionError("the pool broke without a crash")
            crashed.append(victims[0])
            left = [x for x in failed if x != victims[0]]
        return crashed


class PPEPeer(Peer):
    key = "ppe"
    label = "CPython PPE"

    def setup(self):
        import concurrent.futures as cf
        import multiprocessing as mp

        self.cf = cf
        self.ctx = mp.get_context(self.start_method)
        return platform.python_version()

    def start_method_name(self):
        return self.ctx.get_start_method()

    def create(self):
        return self.cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=self.ctx)

    def shutdown(self, pool):
        pool.shutdown(wait=True)

    def call(self, pool, fn, arg):
        return pool.submit(fn, arg).result()

    def map(self, pool, fn, items, chunksize):
        return list(pool.map(fn, items, chunksize=chunksize))

    def as_completed(self, pool, fn, items):
        futs = [pool.submit(fn, x) for x in items]
        return [f.result() for f in self.cf.as_completed(futs)]

    def create_churn(self):
        import multiprocessing as mp

        # CPython refuses max_tasks_per_child with the fork start method.
        ctx = self.ctx if self.ctx.get_start_method() != "fork" else mp.get_context("spawn")
        return self.cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, max_tasks_per_child=1)

    def run_all(self, pool, fn, items):
        return [f.result() for f in [pool.submit(fn, x) for x in items]]

    crash_mode = "breaks"

    @property
    def broken_errors(self):
        from concurrent.futures.process import BrokenProcessPool

        return (BrokenProcessPool,)


class MPPoolPeer(Peer):
    key = "mp_pool"
    label = "mp.Pool"

    def setup(self):
        import multiprocessing as mp

        self.ctx = mp.get_context(self.start_method)
        return platform.python_version()

    def start_method_name(self):
        return self.ctx.get_start_method()

    def create(self):
        return self.ctx.Pool(self.workers)

    def shutdown(self, pool):
        pool.close()
        pool.join()

    def call(self, pool, fn, arg):
        return pool.apply_async(fn, (arg,)).get()

    def map(self, pool, fn, items, chunksize):
        return pool.map(fn, items, chunksize=chunksize)

    def as_completed(self, pool, fn, items):
        q = queue.SimpleQueue()
        n = 0
        for x in items:
            pool.apply_async(fn, (x,), callback=q.put, error_callback=q.put)
            n += 1
        out = [q.get() for _ in range(n)]
        for r in out:
            if isinstance(r, BaseException):
                raise r
        return out

    def create_churn(self):
        return self.ctx.Pool(self.workers, maxtasksperchild=1)


class LokyPeer(Peer):
    key = "loky"
    label = "loky"
    module = "loky"

    def setup(self):
        import concurrent.futures as cf

        import loky

        self.cf = cf
        self.loky = loky
        return getattr(loky, "__version__", "?")

    def start_method_name(self):
        return self.loky_context or "loky"

    def create(self):
        # get_reusable_executor returns the live executor if one exists; the
        # startup benchmark shuts each one down, so a new one is made here.
        return self.loky.get_reusable_executor(
            max_workers=self.workers, context=self.loky_context
        )

    def shutdown(self, pool):
        pool.shutdown(wait=True)

    def call(self, pool, fn, arg):
        return pool.submit(fn, arg).result()

    def map(self, pool, fn, items, chunksize):
        return list(pool.map(fn, items, chunksize=chunksize))

    def as_completed(self, pool, fn, items):
        futs = [pool.submit(fn, x) for x in items]
        return [f.result() for f in self.cf.as_completed(futs)]

    crash_mode = "breaks"

    @property
    def broken_errors(self):
        from concurrent.futures.process import BrokenProcessPool

        return (BrokenProcessPool,)


class PebblePeer(Peer):
    key = "pebble"
    label = "pebble"
    module = "pebble"

    def setup(self):
        import concurrent.futures as cf
        import multiprocessing as mp

        import pebble

        self.cf = cf
        self.pebble = pebble
        self.ctx = mp.get_context(self.start_method)
        ver = getattr(pebble, "__version__", None)
        if ver is None:
            try:
                from importlib.metadata import version

                ver = version("pebble")
            except Exception:
                ver = "?"
        return ver

    def start_method_name(self):
        return self.ctx.get_start_method()

    def create(self):
        return self.pebble.ProcessPool(max_workers=self.workers, context=self.ctx)

    def shutdown(self, pool):
        pool.close()
        pool.join()

    def call(self, pool, fn, arg):
        return pool.schedule(fn, args=(arg,)).result()

    def map(self, pool, fn, items, chunksize):
        return list(pool.map(fn, items, chunksize=chunksize).result())

    def as_completed(self, pool, fn, items):
        futs = [pool.schedule(fn, args=(x,)) for x in items]
        return [f.result() for f in self.cf.as_completed(futs)]

    def create_churn(self):
        return self.pebble.ProcessPool(max_workers=self.workers, max_tasks=1, context=self.ctx)

    def run_all(self, pool, fn, items):
        return [f.result() for f in [pool.schedule(fn, args=(x,)) for x in items]]

    crash_mode = "isolated"

    @property
    def broken_errors(self):
        return (self.pebble.ProcessExpired,)

    def submit(self, pool, fn, arg):
        return pool.schedule(fn, args=(arg,))


PEERS = [PPEPeer, MPPoolPeer, LokyPeer, PebblePeer]
PEER_BY_KEY = {p.key: p for p in PEERS}

# (key, label, format) in table order
METRICS = [
    ("startup_ms", "startup ms (new pool -> 1st result, median/10)", "{:.1f}"),
    ("shutdown_ms", "shutdown ms (median/10)", "{:.1f}"),
    ("latency_p50_us", "latency p50 us (submit+result)", "{:.1f}"),
    ("latency_p99_us", "latency p99 us (submit+result)", "{:.1f}"),
    ("throughput_c1_tasks_s", "map chunksize=1 tasks/s (20k)", "{:,.0f}"),
    ("throughput_c64_tasks_s", "map chunksize=64 tasks/s (200k)", "{:,.0f}"),
    ("payload_MB_s", "1 MiB echo MB/s (both dirs)", "{:.1f}"),
    ("countdown_serial_s", "countdown 10M serial s", "{:.3f}"),
    ("countdown_parallel_s", "countdown 10M parallel s", "{:.3f}"),
    ("countdown_speedup", "countdown speedup", "{:.2f}x"),
    ("as_completed_tasks_s", "as_completed tasks/s (2000)", "{:,.0f}"),
    ("max_tasks_per_child_1_tasks_s", "max tasks per child 1: tasks/s (100)", "{:,.0f}"),
    ("crashes_s", "crash storm: crashed tasks/s (1 in 3 of 90)", "{:,.0f}"),
]


# --------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pctl(sorted_vals, q):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    n = len(sorted_vals)
    k = max(1, math.ceil(q / 100.0 * n))
    return sorted_vals[k - 1]


class Sizes:
    def __init__(self, quick, repeat):
        d = 10 if quick else 1
        self.repeat = repeat
        self.startup_reps = 10 if not quick else 3
        self.latency_warmup = 200 // d
        self.latency_n = 2000 // d
        self.c1_n = 20_000 // d
        self.c64_n = 200_000 // d
        self.payload_size = 1 << 20
        self.payload_n = 200 // d
        self.count = 10_000_000 // d
        self.countdown_reps = 3
        self.ac_n = 2000 // d
        self.churn_n = 100 // d
        self.crash_n = 90 // d


def bench_startup(peer, sz, res):
    starts, stops = [], []
    for _ in range(sz.startup_reps):
        gc.collect()
        t0 = time.perf_counter()
        pool = peer.create()
        r = peer.call(pool, identity, 1)
        t1 = time.perf_counter()
        peer.shutdown(pool)
        t2 = time.perf_counter()
        assert r == 1
        starts.append(t1 - t0)
        stops.append(t2 - t1)
    res["startup_ms"] = statistics.median(starts) * 1e3
    res["shutdown_ms"] = statistics.median(stops) * 1e3


def bench_latency(peer, pool, sz, res):
    call = peer.call
    for i in range(sz.latency_warmup):
        call(pool, identity, i)
    gc.collect()
    pc = time.perf_counter
    lat = [0.0] * sz.latency_n
    for i in range(sz.latency_n):
        t0 = pc()
        r = call(pool, identity, i)
        lat[i] = pc() - t0
        if r != i:
            raise AssertionError("bad result")
    lat.sort()
    res["latency_p50_us"] = pctl(lat, 50) * 1e6
    res["latency_p99_us"] = pctl(lat, 99) * 1e6


def bench_map(peer, pool, n, chunksize, repeat, key, res):
    items = list(range(n))
    peer.map(pool, identity, items[: max(1000, n // 20)], chunksize)  # warm-up
    rates = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = peer.map(pool, identity, items, chunksize)
        dt = time.perf_counter() - t0
        if len(out) != n or out[-1] != n - 1:
            raise AssertionError("bad map result")
        rates.append(n / dt)
    res[key] = statistics.median(rates)


def bench_payload(peer, pool, sz, res):
    payload = bytes(range(256)) * (sz.payload_size // 256)
    for _ in range(5):
        peer.call(pool, identity, payload)
    rates = []
    for _ in range(sz.repeat):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(sz.payload_n):
            r = peer.call(pool, identity, payload)
            if len(r) != len(payload):
                raise AssertionError("bad echo")
        dt = time.perf_counter() - t0
        rates.append(2 * len(payload) * sz.payload_n / dt / 1e6)
    res["payload_MB_s"] = statistics.median(rates)


def bench_countdown(peer, pool, sz, res):
    w = peer.workers
    parts = [sz.count // w + (1 if i < sz.count % w else 0) for i in range(w)]
    peer.map(pool, countdown, [1000] * w, 1)  # warm-up
    serial, par = [], []
    for _ in range(sz.countdown_reps):
        gc.collect()
        t0 = time.perf_counter()
        countdown(sz.count)
        serial.append(time.perf_counter() - t0)
        gc.collect()
        t0 = time.perf_counter()
        peer.map(pool, countdown, parts, 1)
        par.append(time.perf_counter() - t0)
    s, p = statistics.median(serial), statistics.median(par)
    res["countdown_serial_s"] = s
    res["countdown_parallel_s"] = p
    res["countdown_speedup"] = s / p


def bench_as_completed(peer, pool, sz, res):
    items = list(range(sz.ac_n))
    peer.as_completed(pool, identity, items[:200])  # warm-up
    rates = []
    for _ in range(sz.repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = peer.as_completed(pool, identity, items)
        dt = time.perf_counter() - t0
        if sorted(out) != items:
            raise AssertionError("bad as_completed result")
        rates.append(sz.ac_n / dt)
    res["as_completed_tasks_s"] = statistics.median(rates)


def bench_churn(peer, sz, res):
    """Every task in a fresh worker process: what a pool with max tasks per child = 1 sustains."""
    pool = peer.create_churn()
    if pool is None:
        return
    try:
        items = list(range(sz.churn_n))
        peer.run_all(pool, identity, items[:10])  # warm-up
        gc.collect()
        t0 = time.perf_counter()
        out = peer.run_all(pool, identity, items)
        dt = time.perf_counter() - t0
        if out != items:
            raise AssertionError("bad churn result")
        res["max_tasks_per_child_1_tasks_s"] = sz.churn_n / dt
    finally:
        peer.shutdown(pool)


def bench_crashes(peer, sz, res):
    """One task in three kills its worker: crashed tasks per second, recovery included."""
    if peer.crash_mode is None:
        log("  [{}] crashes skipped: a task whose worker dies never completes".format(peer.key))
        return
    crashes = lambda x: x % 3 == 0  # noqa: E731
    items = list(range(sz.crash_n))
    peer.crash_storm(crash_every_third, [1, 2, 3], crashes)  # warm-up
    gc.collect()
    t0 = time.perf_counter()
    crashed = peer.crash_storm(crash_every_third, items, crashes)
    dt = time.perf_counter() - t0
    if sorted(crashed) != [x for x in items if crashes(x)]:
        raise AssertionError("bad crash storm: {} crashed".format(sorted(crashed)))
    res["crashes_s"] = len(crashed) / dt


def run_peer(key, args):
    """Run all benchmarks for one peer in this process; return metric dict."""
    peer = PEER_BY_KEY[key](args.workers, args.start_method, args.loky_context)
    res = {"workers": args.workers}
    try:
        res["version"] = peer.setup()
    except ImportError as e:
        return {"skipped": "not installed ({})".format(e)}
    res["start_method"] = peer.start_method_name()
    sz = Sizes(args.quick, args.repeat)

    def guarded(name, fn, *a):
        t0 = time.perf_counter()
        try:
            fn(*a)
        except Exception as e:  # keep going with the other metrics
            res[name + "_error"] = "{}: {}".format(type(e).__name__, e)
            log("  [{}] {} FAILED: {!r}".format(key, name, e))
        else:
            log("  [{}] {} done in {:.1f}s".format(key, name, time.perf_counter() - t0))

    guarded("startup", bench_startup, peer, sz, res)
    guarded("churn", bench_churn, peer, sz, res)
    guarded("crashes", bench_crashes, peer, sz, res)
    try:
        pool = peer.create()
        peer.call(pool, identity, 0)  # make sure the workers are up
    except Exception as e:
        res["error"] = "cannot start a pool: {}: {}".format(type(e).__name__, e)
        return res
    try:
        guarded("latency", bench_latency, peer, pool, sz, res)
        guarded("throughput_c1", bench_map, peer, pool, sz.c1_n, 1, sz.repeat, "throughput_c1_tasks_s", res)
        guarded("throughput_c64", bench_map, peer, pool, sz.c64_n, 64, sz.repeat, "throughput_c64_tasks_s", res)
        guarded("payload", bench_payload, peer, pool, sz, res)
        guarded("countdown", bench_countdown, peer, pool, sz, res)
        guarded("as_completed", bench_as_completed, peer, pool, sz, res)
    finally:
        peer.shutdown(pool)
    return res


# --------------------------------------------------------------------------
# Orchestration (one fresh interpreter per peer) and reporting
# --------------------------------------------------------------------------


try:
    CLK_TCK = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):
    CLK_TCK = 100


def proc_stat():
    """(busy, steal) jiffies summed over all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq, steal, sum(v))


def children_cpu_s():
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime
    except Exception:
        return None


def wait_idle(max_wait, threshold_pct=10.0):
    """Wait up to max_wait s until a 1 s sample shows < threshold_pct CPU busy."""
    t0 = time.perf_counter()
    while True:
        a = proc_stat()
        time.sleep(1.0)
        b = proc_stat()
        if a is None or b is None:
            return
        total = (b[2] - a[2]) or 1
        pct = 100.0 * (b[0] - a[0]) / total
        if pct < threshold_pct:
            return
        if time.perf_counter() - t0 >= max_wait:
            log("  machine still {:.0f}% busy after {:.0f}s; going on".format(pct, max_wait))
            return


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_child(key, args):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_child",
        key,
        "--workers",
        str(args.workers),
    ]
    if args.start_method:
        cmd += ["--start-method", args.start_method]
    if args.loky_context:
        cmd += ["--loky-context", args.loky_context]
    if args.quick:
        cmd.append("--quick")
    cmd += ["--repeat", str(args.repeat)]
    ru0 = children_cpu_s()
    st0 = proc_stat()
    t0 = time.perf_counter()
    # New session so that a hung peer can be killed with all its workers.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.peer_timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.communicate()
        return {"error": "timed out after {}s".format(args.peer_timeout)}
    wall = time.perf_counter() - t0
    st1 = proc_stat()
    own = children_cpu_s() - ru0
    log("  [{}] finished in {:.1f}s".format(key, wall))
    lines = out.decode().strip().splitlines()
    if p.returncode != 0 or not lines:
        return {"error": "child exited with status {}".format(p.returncode)}
    try:
        res = json.loads(lines[-1])
    except ValueError:
        return {"error": "unparsable child output"}
    if st0 and st1 and own is not None and "skipped" not in res:
        # CPU time burnt on this machine by anything other than this peer's
        # process tree while it ran, as % of all CPUs: a noise indicator.
        ncpu = os.cpu_count() or 1
        busy = (st1[0] - st0[0]) / CLK_TCK
        res["wall_s"] = wall
        res["background_cpu_pct"] = max(0.0, busy - own) / (wall * ncpu) * 100
        res["steal_pct"] = (st1[1] - st0[1]) / CLK_TCK / (wall * ncpu) * 100
    return res


def format_table(results, keys):
    cols = [PEER_BY_KEY[k].label for k in keys]
    rows = []
    info_rows = [("version", "version"), ("start_method", "start method"), ("workers", "workers")]
    for mk, label in info_rows:
        rows.append([label] + [str(results[k].get(mk, "-")) for k in keys])
    noise_rows = [
        ("wall_s", "peer wall time s", "{:.1f}"),
        ("background_cpu_pct", "background CPU % (noise; other processes)", "{:.1f}"),
        ("steal_pct", "steal % (noise; hypervisor)", "{:.1f}"),
    ]
    for mk, label, fmt in METRICS:
        row = [label]
        for k in keys:
            r = results[k]
            if "skipped" in r:
                row.append("skipped")
            elif "error" in r:
                row.append("error")
            elif mk in r:
                row.append(fmt.format(r[mk]))
            else:
                row.append("n/a")
        rows.append(row)
    for mk, label, fmt in noise_rows:
        rows.append([label] + [fmt.format(results[k][mk]) if mk in results[k] else "-" for k in keys])
    header = ["metric"] + cols
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]
    lines = []

    def fmt_row(r):
        return "  ".join(
            (str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])) for i, c in enumerate(r)
        )

    lines.append(fmt_row(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt_row(r) for r in rows)
    notes = []
    for k in keys:
        r = results[k]
        for mk, v in r.items():
            if mk == "skipped" or mk == "error" or mk.endswith("_error"):
                notes.append("{}: {}: {}".format(k, mk, v))
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="worker processes per pool (default 2)")
    ap.add_argument("--json", action="store_true", help="print {peer: {metric: value}} JSON on stdout")
    ap.add_argument(
        "--peers",
        default=",".join(p.key for p in PEERS),
        help="comma-separated subset of: " + ",".join(p.key for p in PEERS),
    )
    ap.add_argument(
        "--start-method",
        choices=["fork", "spawn", "forkserver"],
        default=None,
        help="start method for ppe, mp_pool and pebble (default: platform default)",
    )
    ap.add_argument(
        "--loky-context",
        choices=["loky", "loky_init_main", "spawn", "forkserver"],
        default=None,
        help="context for loky (default: loky's own default, 'loky')",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="repetitions (median reported) for the map, payload and as_completed metrics (default 3)",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each peer, wait up to SECONDS for the machine to be idle (<10%% CPU busy over 1 s)",
    )
    ap.add_argument("--quick", action="store_true", help="1/10 sizes, for smoke tests")
    ap.add_argument("--peer-timeout", type=float, default=300.0, help="seconds before a peer is killed")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    keys = [k.strip() for k in args.peers.split(",") if k.strip()]
    for k in keys:
        if k not in PEER_BY_KEY:
            ap.error("unknown peer {!r}".format(k))
    args.peer_keys = keys
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    if args._child:
        res = run_peer(args._child, args)
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
        return 0

    t_all = time.perf_counter()
    log(
        "python_peers: Python {} ({}), {}, nproc={}, CPU: {}, workers={}".format(
            platform.python_version(),
            platform.python_implementation(),
            platform.platform(),
            os.cpu_count(),
            cpu_model(),
            args.workers,
        )
    )
    results = {}
    for k in args.peer_keys:
        cls = PEER_BY_KEY[k]
        if cls.module and importlib.util.find_spec(cls.module) is None:
            log("  [{}] skipped: module {!r} not installed".format(k, cls.module))
            results[k] = {"skipped": "not installed (pip install {})".format(cls.module)}
            continue
        if args.wait_idle > 0:
            wait_idle(args.wait_idle)
        log("  [{}] running ...".format(k))
        results[k] = run_child(k, args)
    log("python_peers: total {:.1f}s".format(time.perf_counter() - t_all))

    table = format_table(results, args.peer_keys)
    if args.json:
        print(table, file=sys.stderr)
        sys.stdout.write(json.dumps(results, indent=2, sort_keys=False) + "\n")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    # Leave no __pycache__ next to this script (children inherit the env var).
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    # Re-import this file as a regular module so that the worker functions are
    # pickled by reference as python_peers.identity etc. (not __main__.*).
    _here = os.path.dirname(os.path.abspath(__file__))
    if _here not in sys.path:
        sys.path.insert(0, _here)
    _mod = importlib.import_module(MODULE_NAME) if os.path.basename(__file__) == MODULE_NAME + ".py" else None
    sys.exit((_mod or sys.modules[__name__]).main())
