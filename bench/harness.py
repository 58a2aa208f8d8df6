#!/usr/bin/env python3
"""herder against s6, runit and supervisord, scenario by scenario.

Run through `bench/run`, which builds what this needs. Every figure is printed as
one JSON line as soon as it is measured; a summary table with herder/peer ratios
and the targets of issue 7 closes the run.

How it measures, the same for every supervisor:
- Each service is bench/svc.c. On start it sends its CLOCK_MONOTONIC time to a
  datagram socket the harness holds, so "all N running" is the services' own word.
- Stop and shutdown are timed from the request (each supervisor's documented
  shutdown: SIGTERM to herd, s6-svscan and supervisord; SIGHUP to runsvdir, whose
  SIGTERM leaves the services running) until the supervisor, its helper processes
  (s6-supervise, runsv) and every service process have exited, watched with pidfds
  opened before the request.
- Survivors are processes with the run's marker in argv found by scanning /proc,
  never by asking the supervisor. Everything left is SIGKILLed by pidfd.
- pid1 runs each supervisor as a container's entrypoint (a cgroup of its own; pid,
  mount and cgroup namespaces; cgroup2 mounted afresh), and removes that cgroup
  with everything below it afterwards, as runc does. "pid1 pidns" is each in a
  pid namespace alone (herder then removes its own cgroups before it exits).
- control is herder's alone, and then a floor: crates/herd/examples/control_floor.rs,
  tokio and hyper on a Unix socket answering a body the size of herder's at once,
  measured by the same client, so the figure can be read against what the
  machine gives any server of that shape.
- CPU is the on-CPU nanoseconds of every thread of the supervisor and its helpers
  (/proc/PID/task/TID/schedstat); memory is their summed PSS (smaps_rollup), so
  shared libraries are counted once.
"""

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# HERD_BIN runs another build of herder (an A/B of two commits on one machine).
HERD = os.environ.get("HERD_BIN") or os.path.join(ROOT, "target", "release", "herd")
SVC = os.path.join(ROOT, "target", "bench", "svc")
PS = os.path.join(ROOT, "target", "bench", "ps")
FLOOR = os.path.join(ROOT, "target", "release", "examples", "control_floor")
PEERS = ["s6", "runit", "supervisord"]
# The largest start/stop size runit and supervisord are run at.
PEER_MAX_N = 500
SUPERVISORS = ["herder"] + PEERS
BACKENDS = ["cgroup2", "freezer", "none"]


# ---------------------------------------------------------------- /proc


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid):
    """(state, ppid, starttime) of pid, or None once it is gone."""
    s = read(f"/proc/{pid}/stat")
    if s is None:
        return None
    rest = s[s.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def marked(marker):
    """Live (not zombie) processes with `marker` in argv."""
    needle = marker.encode()
    out = []
    for pid in all_pids():
        cmd = read(f"/proc/{pid}/cmdline", "rb")
        if cmd and needle in cmd:
            st = stat_fields(pid)
            if st and st[0] != "Z":
                out.append(pid)
    return out


def descendants(root):
    children = {}
    for pid in all_pids():
        st = stat_fields(pid)
        if st:
            children.setdefault(st[1], []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cgroup2_mount():
    for line in (read("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ")[0] == "cgroup2":
            return left.split(" ")[4]
    raise RuntimeError("no cgroup2 mount")


def remove_cgroup(top):
    """Removes a container cgroup this run made, sub-cgroups first, as a runtime
    does; whatever still runs in it (nothing should) is SIGKILLed by pidfd first."""
    for _ in range(50):
        pids = []
        for d, _, _ in os.walk(top):
            pids += [int(p) for p in (read(os.path.join(d, "cgroup.procs")) or "").split()]
        if not pids:
            break
        w = Watch(pids)
        w.kill()
        w.wait(time.monotonic() + 5)
        w.close()
    for d, _, _ in sorted(os.walk(top), key=lambda e: -e[0].count("/")):
        os.rmdir(d)


def zombies_under(root):
    return [p for p in descendants(root) if (stat_fields(p) or ("",))[0] == "Z"]


def cpu_ns(pids):
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            s = read(f"/proc/{pid}/task/{tid}/schedstat")
            if s:
                total += int(s.split()[0])
    return total


def memory_kb(pids, field):
    total = 0
    for pid in pids:
        s = read(f"/proc/{pid}/smaps_rollup") or ""
        for line in s.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total


class Watch:
    """pidfds for a set of processes, opened before they are asked to stop."""

    def __init__(self, pids):
        self.fds = {}
        for pid in set(pids):
            try:
                self.fds[os.pidfd_open(pid)] = pid
            except OSError:
                pass  # already gone

    def wait(self, deadline):
        """Waits until every process has exited or `deadline` (monotonic s);
        returns the time the last one was seen to exit, or None."""
        poll = select.poll()
        for fd in self.fds:
            poll.register(fd, select.POLLIN)
        left, last = set(self.fds), time.monotonic()
        while left:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return None
            for fd, _ in poll.poll(timeout * 1000):
                poll.unregister(fd)
                left.discard(fd)
            last = time.monotonic()
        return last

    def kill(self):
        for fd in self.fds:
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = {}


def kill_marked(marker):
    w = Watch(marked(marker))
    w.kill()
    w.wait(time.monotonic() + 5)
    w.close()


# ---------------------------------------------------------------- services


class Hello:
    """The datagram socket services report their start to."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(path)

    def collect(self, n, timeout):
        """Start times (ns) of the next n services, fewer at the timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                out.append(int(self.sock.recv(64)))
            except socket.timeout:
                break
        return out

    def drain(self, seconds):
        return self.collect(10**9, seconds)

    def close(self):
        self.sock.close()


class Service:
    def __init__(self, name, mode, arg=None, stop_timeout=None, health=None):
        self.name, self.mode, self.arg, self.stop_timeout = name, mode, arg, stop_timeout
        # herder only: a `health` table's TOML, e.g. '{ tcp = "127.0.0.1:9" }'.
        self.health = health

    def argv(self, marker, sock):
        a = [SVC, marker, self.mode, sock]
        return a + [str(self.arg)] if self.arg is not None else a


def services(n, mode="wait", arg=None, stop_timeout=None):
    return [Service(f"s{i:03}", mode, arg, stop_timeout) for i in range(n)]


# ---------------------------------------------------------------- supervisors


class Supervisor:
    """One supervisor process over a set of services, in its own temp dir."""

    def __init__(self, kind, svcs, tmp, marker, hello, backend=None, pid1=False):
        self.kind, self.svcs, self.tmp, self.marker = kind, svcs, tmp, marker
        self.hello, self.backend, self.pid1 = hello, backend, pid1
        self.argv = getattr(self, "setup_" + kind)()
        self.container = None
        if pid1 == "container":
            # As a container runtime starts an entrypoint: a cgroup of its own, and
            # pid, mount and cgroup namespaces with cgroup2 mounted afresh, so the
            # container's cgroup is the root it sees. Removed with everything below
            # it after the run, as runc and crun do.
            mount = cgroup2_mount()
            self.container = os.path.join(mount, f"hb-ctr-{os.getpid()}-{os.path.basename(tmp)}")
            os.mkdir(self.container)
            remount = f'umount {mount} && mount -t cgroup2 cgroup2 {mount} && exec "$@"'
            self.argv = ["unshare", "--pid", "--fork", "--mount-proc", "--cgroup", "--",
                         "sh", "-c", remount, "sh"] + self.argv
        elif pid1:
            self.argv = ["unshare", "--pid", "--fork", "--mount-proc", "--"] + self.argv
        self.proc = None
        self.init = None

    def svc_argv(self, s):
        return s.argv(self.marker, self.hello.path)

    def setup_herder(self):
        conf = os.path.join(self.tmp, "herd.toml")
        self.socket = os.path.join(self.tmp, "herd.sock")
        lines = ["[supervisor]", f'state_dir = "{self.tmp}/state"', f'socket = "{self.socket}"']
        if self.backend:
            lines.append(f'containment = "{self.backend}"')
        for s in self.svcs:
            lines += ["", f"[services.{s.name}]", f"command = {json.dumps(self.svc_argv(s))}"]
            if s.stop_timeout:
                lines.append(f'stop = {{ timeout = "{int(s.stop_timeout * 1000)}ms" }}')
            if s.health:
                lines.append(f"health = {s.health}")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [HERD, "up", "-f", conf]

    def service_dirs(self, run):
        scan = os.path.join(self.tmp, "scan")
        os.mkdir(scan)
        for s in self.svcs:
            d = os.path.join(scan, s.name)
            os.mkdir(d)
            with open(os.path.join(d, "run"), "w") as f:
                f.write(run(s))
            os.chmod(os.path.join(d, "run"), 0o755)
            if s.stop_timeout and self.kind == "s6":
                with open(os.path.join(d, "timeout-kill"), "w") as f:
                    f.write(f"{int(s.stop_timeout * 1000)}\n")
        return scan

    def setup_s6(self):
        # execline is s6's own script language and what its documentation uses.
        self.scan = self.service_dirs(
            lambda s: "#!/usr/bin/execlineb -P\n" + " ".join(self.svc_argv(s)) + "\n"
        )
        # -c: s6-svscan supervises at most 500 services unless told more.
        return ["s6-svscan", "-c", str(max(500, 2 * len(self.svcs))), self.scan]

    def setup_runit(self):
        self.scan = self.service_dirs(
            lambda s: "#!/bin/sh\nexec " + " ".join(self.svc_argv(s)) + "\n"
        )
        return ["runsvdir", "-P", self.scan]

    def setup_supervisord(self):
        conf = os.path.join(self.tmp, "supervisord.conf")
        logs = os.path.join(self.tmp, "logs")
        os.mkdir(logs)
        lines = [
            "[supervisord]",
            "nodaemon=true",
            f"logfile={self.tmp}/supervisord.log",
            f"pidfile={self.tmp}/supervisord.pid",
            f"childlogdir={logs}",
            "minfds=16384",
            "minprocs=4096",
        ]
        for s in self.svcs:
            lines += ["", f"[program:{s.name}]", "command=" + " ".join(self.svc_argv(s))]
            if s.stop_timeout:
                lines.append(f"stopwaitsecs={max(1, round(s.stop_timeout))}")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ["supervisord", "-n", "-c", conf]

    # -- running

    def start(self):
        log = open(os.path.join(self.tmp, "supervisor.log"), "wb")
        enter = None
        if self.container:
            procs = os.path.join(self.container, "cgroup.procs")

            def enter():
                with open(procs, "w") as f:
                    f.write("0")
        t0 = time.monotonic_ns()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=self.tmp, preexec_fn=enter,
        )
        log.close()
        return t0

    def main_pid(self):
        """The supervisor itself: under unshare, the namespace's PID 1. Found once
        and kept: the search reads every /proc/PID/stat (over a millisecond), and
        stop() asks for it inside its timed window."""
        if not self.pid1:
            return self.proc.pid
        if self.init is not None:
            return self.init
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            kids = [p for p in all_pids() if (stat_fields(p) or (0, 0))[1] == self.proc.pid]
            if kids:
                self.init = kids[0]
                return self.init
            time.sleep(0.001)
        raise RuntimeError("no PID 1 under unshare")

    def helpers(self):
        """The supervisor and its helper processes (not the services)."""
        sup = self.main_pid()
        svc = set(marked(self.marker))
        return [sup] + [p for p in descendants(sup) if p not in svc]

    def stop_request(self):
        sig = signal.SIGHUP if self.kind == "runit" else signal.SIGTERM
        if self.kind == "runit" and any(s.stop_timeout for s in self.svcs):
            # runsv never escalates on its own; `sv force-shutdown` is runit's
            # "TERM, then KILL after -w seconds".
            w = max(s.stop_timeout for s in self.svcs)
            dirs = [os.path.join(self.scan, s.name) for s in self.svcs]
            subprocess.run(["sv", "-w", str(w), "force-shutdown"] + dirs,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.kill(self.main_pid(), sig)

    def stop(self, deadline_s):
        """Asks for a shutdown; returns (seconds until everything exited or None,
        survivors found by marker)."""
        watch = Watch(self.helpers() + marked(self.marker) + [self.proc.pid])
        t0 = time.monotonic()
        self.stop_request()
        last = watch.wait(t0 + deadline_s)
        watch.close()
        survivors = marked(self.marker)
        return (None if last is None else last - t0), survivors

    def cleanup(self):
        """SIGKILLs whatever of this run is left, by pid."""
        if self.proc and self.proc.poll() is None:
            w = Watch([self.proc.pid] + descendants(self.proc.pid))
            w.kill()
            w.wait(time.monotonic() + 5)
            w.close()
        kill_marked(self.marker)
        if self.proc:
            self.proc.wait()
        if self.container:
            remove_cgroup(self.container)


# ---------------------------------------------------------------- scenarios


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = []
        self.seq = 0

    def emit(self, scenario, supervisor, metric, value, unit, **extra):
        rec = {"scenario": scenario, "supervisor": supervisor, "metric": metric,
               "value": value, "unit": unit}
        rec.update(extra)
        self.results.append(rec)
        print(json.dumps(rec), flush=True)

    def run(self, kind, svcs, backend=None, pid1=False, body=None):
        """Starts `kind` over `svcs`, waits until all are running, runs `body`."""
        self.seq += 1
        marker = f"hbench{os.getpid()}x{self.seq}"
        tmp = tempfile.mkdtemp(prefix=f"hb-{kind}-")
        hello = Hello(os.path.join(tmp, "hello.sock"))
        sup = Supervisor(kind, svcs, tmp, marker, hello, backend, pid1)
        try:
            t0 = sup.start()
            return body(sup, t0)
        finally:
            sup.cleanup()
            hello.close()
            if not self.args.keep:
                shutil.rmtree(tmp, ignore_errors=True)

    def label(self, kind, backend):
        return f"{kind}/{backend}" if backend else kind

    def wait_running(self, sup, t0, n, timeout=120):
        starts = sup.hello.collect(n, timeout)
        if len(starts) < n:
            raise RuntimeError(f"{sup.kind}: only {len(starts)} of {n} services started")
        return (max(starts) - t0) / 1e9

    # 1 and 2
    def start_stop(self):
        for n in self.args.sizes:
            for kind, backend in self.kinds_backends():
                # runit and supervisord take seconds a hundred services; past
                # PEER_MAX_N they would take the run's whole time.
                if kind in ("runit", "supervisord") and n > PEER_MAX_N:
                    continue
                who = self.label(kind, backend)
                starts, stops = [], []
                for _ in range(self.args.repeat):
                    def body(sup, t0):
                        starts.append(self.wait_running(sup, t0, n))
                        if kind == "herder":
                            # Answers `herd ps` with every service's process
                            # (outside the timed windows).
                            listed = listed_running(sup.socket)
                            if listed != n:
                                raise RuntimeError(f"{who}: herd ps lists {listed} of {n} running")
                        took, surv = sup.stop(self.args.stop_deadline)
                        stops.append(took if took is not None else float("nan"))
                        if surv:
                            self.emit("stop", who, "survivors", len(surv), "processes", n=n)
                    try:
                        self.run(kind, services(n), backend=backend, body=body)
                    except RuntimeError as e:
                        # One supervisor failing at one size is a figure too; the
                        # run goes on with the others.
                        self.emit("start", who, "failed", str(e), "", n=n)
                        break
                if len(stops) < self.args.repeat:
                    continue
                self.emit("start", who, "seconds", statistics.median(starts), "s", n=n,
                          runs=[round(x, 4) for x in starts])
                self.emit("stop", who, "seconds", statistics.median(stops), "s", n=n,
                          runs=[round(x, 4) for x in stops])

    # 3
    def stubborn(self):
        for kind in self.kinds():
            def body(sup, t0):
                self.wait_running(sup, t0, 20)
                # supervisord SIGKILLs one program a second: give it the time.
                took, surv = sup.stop(30)
                self.emit("stubborn", kind, "seconds", took, "s", n=20)
                self.emit("stubborn", kind, "survivors", len(surv), "processes", n=20)
            self.run(kind, services(20, "stubborn", stop_timeout=1.0), body=body)

    # 4 and 5
    def survivors(self, scenario, svcs, procs, deadline=10):
        for kind, backend in self.kinds_backends():
            def body(sup, t0):
                self.wait_running(sup, t0, len(svcs))
                # The escaped daemons and tree leaves exist once every main said hello,
                # but give a slow fork a moment: wait until all are seen.
                limit = time.monotonic() + 10
                while len(marked(sup.marker)) < procs and time.monotonic() < limit:
                    time.sleep(0.01)
                took, surv = sup.stop(deadline)
                label = self.label(kind, backend)
                self.emit(scenario, label, "seconds", took, "s", processes=procs)
                self.emit(scenario, label, "survivors", len(surv), "processes", processes=procs)
            self.run(kind, svcs, backend=backend, body=body)

    def escape(self):
        self.survivors("escape", services(10, "escape"), 20, deadline=5)

    def tree(self):
        self.survivors("tree 5x50", services(5, "tree", 50), 250)
        self.survivors("tree 1x1000", services(1, "tree", 1000), 1000)

    # 6
    def idle(self):
        for kind in self.kinds():
            def body(sup, t0):
                self.wait_running(sup, t0, 100)
                time.sleep(1)  # let start-up settle
                pids = sup.helpers()
                c0 = cpu_ns(pids)
                time.sleep(self.args.idle)
                c1 = cpu_ns(pids)
                self.emit("idle", kind, "cpu", (c1 - c0) / 1e9, "s", n=100,
                          seconds=self.args.idle, processes=len(pids))
                self.emit("idle", kind, "pss", memory_kb(pids, "Pss") / 1024, "MB", n=100)
                self.emit("idle", kind, "rss", memory_kb(pids, "Rss") / 1024, "MB", n=100)
                sup.stop(30)
            self.run(kind, services(100), body=body)
        if "herder" in self.kinds():
            self.idle_health()

    def idle_health(self):
        # "idle health": the same 100 services, each with a tcp health check
        # every 10 s against a listener of the harness's: herder's CPU over the
        # idle window, and that CPU per check, against plain "idle".
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        accepted = [0]

        def accept():
            while True:
                try:
                    c, _ = listener.accept()
                except OSError:
                    return
                accepted[0] += 1
                c.close()
        threading.Thread(target=accept, daemon=True).start()
        svcs = services(100)
        for s in svcs:
            s.health = f'{{ tcp = "127.0.0.1:{port}", interval = "10s" }}'

        def body(sup, t0):
            self.wait_running(sup, t0, 100)
            time.sleep(1)
            pids = sup.helpers()
            c0, a0 = cpu_ns(pids), accepted[0]
            time.sleep(self.args.idle)
            c1, a1 = cpu_ns(pids), accepted[0]
            checks = a1 - a0
            self.emit("idle health", "herder", "cpu", (c1 - c0) / 1e9, "s", n=100,
                      seconds=self.args.idle, checks=checks)
            if checks:
                self.emit("idle health", "herder", "cpu per check", (c1 - c0) / 1e3 / checks,
                          "us", checks=checks)
            sup.stop(30)
        try:
            self.run("herder", svcs, body=body)
        finally:
            listener.close()

    # 7
    def crashloop(self):
        for kind in self.kinds():
            def body(sup, t0):
                starts = sup.hello.drain(self.args.idle)
                gaps = [(b - a) / 1e6 for a, b in zip(starts, starts[1:])]
                self.emit("crashloop", kind, "starts", len(starts), "starts",
                          seconds=self.args.idle)
                if gaps:
                    self.emit("crashloop", kind, "gap", statistics.median(gaps), "ms",
                              min=round(min(gaps), 1), max=round(max(gaps), 1))
                sup.stop(30)
            self.run(kind, services(1, "crash"), body=body)

    # 8
    def pid1(self):
        # "pid1": a container's entrypoint (pid, mount and cgroup namespaces, a
        # cgroup of its own). "pid1 pidns": a pid namespace alone, still in the
        # host's cgroup namespace, where herder also removes its own cgroups.
        runs = [(kind, "pid1", "container") for kind in self.kinds()]
        runs += [(kind, "pid1 pidns", "pidns") for kind in self.kinds()]
        for kind, scenario, mode in runs:
            # One shutdown takes a few milliseconds, near the noise of a busy
            # 2-core machine: like start/stop, the median of --repeat runs, and
            # the worst zombie and survivor counts.
            zombies, took, surv = [], [], []
            for _ in range(self.args.repeat):
                def body(sup, t0):
                    self.wait_running(sup, t0, 10)
                    init = sup.main_pid()
                    time.sleep(0.5)  # the orphans exit 20 ms after they are made
                    zombies.append(len(zombies_under(init)))
                    t, s = sup.stop(10)
                    took.append(t if t is not None else float("nan"))
                    surv.append(len(s))
                self.run(kind, services(10, "orphans", 10), pid1=mode, body=body)
            self.emit(scenario, kind, "zombies", max(zombies), "processes", orphans=100)
            self.emit(scenario, kind, "seconds", statistics.median(took), "s", n=10,
                      runs=[round(x, 4) for x in took])
            self.emit(scenario, kind, "survivors", max(surv), "processes", n=10)

    # 9
    def control(self):
        size = []

        def body(sup, t0):
            self.wait_running(sup, t0, 100)
            deadline = time.monotonic() + 10
            while not os.path.exists(sup.socket) and time.monotonic() < deadline:
                time.sleep(0.01)
            size.append(answer_size(sup.socket))
            self.latencies("herder", sup.socket)
            sup.stop(30)
        self.run("herder", services(100), body=body)
        # The floor: a bare server of the same shape (tokio, hyper, the Unix
        # socket) answering a body of the same size, measured the same way, and
        # started as herder is, in a session of its own: with the kernel's
        # autogroup scheduling a session is a group of its own, and a floor in
        # the harness's session would share one with the 100 client threads.
        tmp = tempfile.mkdtemp(prefix="hb-floor-")
        path = os.path.join(tmp, "floor.sock")
        floor = subprocess.Popen([FLOOR, path, str(size[0])], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            # Its first line says it is listening; EOF, that it could not.
            if floor.stdout.readline().strip() != "listening":
                raise RuntimeError(f"{FLOOR} did not start (exit {floor.wait()})")
            self.latencies("floor", path)
        finally:
            floor.kill()
            floor.wait()
            shutil.rmtree(tmp, ignore_errors=True)

    def latencies(self, who, path):
        self.emit_latency("control seq", who, ps_client(path, "seq", 1000))
        # Ten rounds of 100 at once: the p99 of one round is its second-worst
        # request, a figure that moves by milliseconds from run to run.
        conc = []
        for _ in range(10):
            conc += ps_client(path, "conc", 100)
        self.emit_latency("control 100x", who, conc, rounds=10)

    def emit_latency(self, scenario, who, samples, **extra):
        s = sorted(samples)
        pct = lambda p: s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000
        for p in (50, 99):
            self.emit(scenario, who, f"p{p}", pct(p), "ms", requests=len(s), **extra)
        self.emit(scenario, who, "max", s[-1] * 1000, "ms", requests=len(s), **extra)

    def kinds(self):
        return [k for k in SUPERVISORS if k in self.args.supervisors]

    def kinds_backends(self):
        for kind in self.kinds():
            if kind == "herder":
                for b in self.args.backends:
                    yield kind, b
            else:
                yield kind, None


def listed_running(path):
    """Services `GET /v1/services` lists with a process."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        c.sendall(b"GET /v1/services HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(1 << 20):
            data += chunk
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return sum(1 for s in body if s.get("pids"))


def answer_size(path):
    """Bytes in the body of herder's answer to `GET /v1/services`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(path)
        c.sendall(b"GET /v1/services HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return len(data.split(b"\r\n\r\n", 1)[1])


def ps_client(path, mode, n):
    """Latencies (s) of n `GET /v1/services` from bench/ps.c."""
    out = subprocess.run([PS, path, mode, str(n)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ps client: an answer was not 200 ({out.stderr.strip()})")
    return [float(l) / 1e6 for l in out.stdout.split()]


# ---------------------------------------------------------------- summary

TARGETS = {
    # (scenario, metric, n): (bound, "abs" | ratio-to-s6 bound)
    ("start", "seconds", 500): (0.4, 0.5),
    ("stop", "seconds", 500): (0.15, 1 / 3),
    ("stubborn", "seconds", None): (1.02, None),
    ("stubborn", "survivors", None): (0, None),
    ("idle", "cpu", None): (0.0005, None),
    ("idle", "pss", None): (4.0, None),
    ("pid1", "zombies", None): (0, None),
    ("pid1", "seconds", None): (0.005, None),
    ("control seq", "p99", None): (5.0, None),
    ("control 100x", "p99", None): (5.0, None),
}


def summary(results):
    rows = {}
    for r in results:
        sup = r["supervisor"]
        base = sup.split("/")[0]
        key = (r["scenario"], r["metric"], r.get("n"), r["unit"])
        rows.setdefault(key, {})[sup if base == "herder" else base] = r["value"]

    def fmt(v, unit):
        if v is None:
            return "never"  # something was still running at the deadline
        if isinstance(v, float) and v != v:
            return "nan"
        if unit == "s":
            return f"{v:.3f}"
        if unit in ("ms", "MB"):
            return f"{v:.2f}"
        return f"{v:g}" if isinstance(v, float) else str(v)

    herder_cols = sorted({s for r in rows.values() for s in r if s.startswith("herder")})
    # The control floor (a bare server, see control()) has a column of its own
    # when it was measured.
    peers = PEERS + (["floor"] if any("floor" in r for r in rows.values()) else [])
    head = ["scenario", "metric", "unit"] + herder_cols + peers + ["herder/s6", "target"]
    table = []
    for (scenario, metric, n, unit), vals in rows.items():
        name = f"{scenario} {n}" if n and scenario in ("start", "stop") else scenario
        h = vals.get("herder", vals.get("herder/cgroup2"))
        s6 = vals.get("s6")
        ratio = f"{h / s6:.2f}" if isinstance(h, (int, float)) and s6 and h == h else ""
        t = TARGETS.get((scenario, metric, n)) or TARGETS.get((scenario, metric, None))
        target = ""
        if t:
            bound, rel = t
            ok = h is not None and h == h and h <= bound
            if rel is not None and s6:
                ok = ok and h <= rel * s6
                target = f"<= {bound:g} and <= {rel:.2f}x s6"
            else:
                target = f"<= {bound:g}"
            target += " ok" if ok else " MISSED"
        table.append([name, metric, unit] + [fmt(vals.get(c), unit) if c in vals else "-"
                                              for c in herder_cols + peers] + [ratio, target])
    widths = [max(len(str(r[i])) for r in [head] + table) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print()
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table:
        print(line(r))


def checks(results):
    """Issue 22's targets, each with the figures it compares: one line each."""
    fig = {}
    for r in results:
        fig[(r["scenario"], r["supervisor"], r["metric"], r.get("n"))] = r["value"]
    stop = lambda who, n: fig.get(("stop", who, "seconds", n))
    start = lambda who, n: fig.get(("start", who, "seconds", n))
    out = []

    def check(what, ok, detail):
        if ok is not None:
            out.append(f"{'ok    ' if ok else 'MISSED'} {what}: {detail}")

    def le(a, b, k=1.0):
        return None if a is None or b is None or a != a or b != b else a <= k * b

    for n in (500, 1000, 2000):
        none, v2, s6 = stop("herder/none", n), stop("herder/cgroup2", n), stop("s6", n)
        check(f"stop {n}: none <= 2x cgroup2 and < s6", le(none, v2, 2) and le(none, s6),
              f"none {none}, cgroup2 {v2}, s6 {s6}")
    for b in BACKENDS:
        who = f"herder/{b}"
        check(f"stop 2000 <= 2.5x stop 1000 ({b})", le(stop(who, 2000), stop(who, 1000), 2.5),
              f"{stop(who, 2000)} vs {stop(who, 1000)}")
        for name, f in (("start", start), ("stop", stop)):
            check(f"{name} 10000 <= 12x {name} 1000 ({b})", le(f(who, 10000), f(who, 1000), 12),
                  f"{f(who, 10000)} vs {f(who, 1000)}")
    h, fl = fig.get(("control 100x", "herder", "p99", None)), fig.get(("control 100x", "floor", "p99", None))
    check("control 100x p99 <= 1.5x the floor's", le(h, fl, 1.5), f"{h} ms vs {fl} ms")
    h10 = stop("herder/cgroup2", 10) or stop("herder", 10)
    check("stop 10 <= s6", le(h10, stop("s6", 10)), f"{h10} vs {stop('s6', 10)}")
    for sc in ("pid1", "pid1 pidns"):
        h, p = fig.get((sc, "herder", "seconds", 10)), fig.get((sc, "s6", "seconds", 10))
        check(f"{sc} <= s6", le(h, p), f"{h} vs {p}")
    if out:
        print()
        print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="start,stubborn,escape,tree,idle,crashloop,pid1,control")
    ap.add_argument("--supervisors", default=",".join(SUPERVISORS))
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--sizes", default="10,100,500,1000,2000",
                    help="services in the start/stop scenario")
    ap.add_argument("--large", action="store_true",
                    help="also start and stop 10,000 services (herder and s6; minutes)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of start/stop and pid1 (median kept)")
    ap.add_argument("--stop-deadline", type=float, default=60.0,
                    help="seconds a start/stop shutdown may take before it counts as never")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle and crashloop")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = ap.parse_args()
    args.supervisors = args.supervisors.split(",")
    args.backends = args.backends.split(",")
    args.sizes = [int(n) for n in args.sizes.split(",")] + ([10000] if args.large else [])
    bench = Bench(args)
    print(json.dumps({"machine": machine()}), flush=True)
    for name in args.scenarios.split(","):
        {"start": bench.start_stop, "stop": bench.start_stop, "stubborn": bench.stubborn,
         "escape": bench.escape, "tree": bench.tree, "idle": bench.idle,
         "crashloop": bench.crashloop, "pid1": bench.pid1, "control": bench.control}[name]()
    if args.json:
        with open(args.json, "w") as f:
            for r in bench.results:
                f.write(json.dumps(r) + "\n")
    summary(bench.results)
    checks(bench.results)


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in (read("/proc/cpuinfo") or "").splitlines()
                if l.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
            "herder": subprocess.run([HERD, "--version"], capture_output=True, text=True).stdout.strip()}


if __name__ == "__main__":
    main()
