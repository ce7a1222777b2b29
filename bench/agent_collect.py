"""Host collectors: CPU time and memory of `graunt agent` per collection
round with every collector on, against Python diamond 4.0.515 (the daemon,
Python 2.7) collecting the same nine collectors in the same run.

  python3 bench/agent_collect.py [--graunt target/release/graunt]
      [--diamond-python /root/.pyenv/versions/2.7.18/bin/python2.7]
      [--diamond-prefix /tmp/dia/env] [--rounds 60]

diamond is installed with `python2.7 -m pip install --prefix DIR
diamond==4.0.515 configobj` (it needs Python 2). Both run every collector
(cpu, memory, loadavg, network, diskspace, diskusage, vmstat, tcp, sockstat)
every second and send to a TCP sink that counts lines. After 5 s of
warm-up, CPU is user + system time of the whole process tree over ROUNDS
seconds (diamond runs a process per collector) divided by ROUNDS; memory is
the tree's RSS at the end (sum over processes, and the largest one). Prints
Markdown rows.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

COLLECTORS = ["cpu", "memory", "loadavg", "network", "diskspace", "diskusage",
              "vmstat", "tcp", "sockstat"]
DIAMOND_NAMES = ["CPUCollector", "MemoryCollector", "LoadAverageCollector",
                 "NetworkCollector", "DiskSpaceCollector", "DiskUsageCollector",
                 "VMStatCollector", "TCPCollector", "SockstatCollector"]
TICK = os.sysconf("SC_CLK_TCK")


class Sink:
    """A TCP listener counting received lines."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lines = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            with self.lock:
                self.lines += data.count(b"\n")


def tree(pid):
    """pid and every descendant."""
    children = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(p))
        except OSError:
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, and the children it has waited for
            total += sum(int(x) for x in fields[11:15])
        except OSError:
            continue
    return total / TICK


def rss_kib(pids):
    sizes = []
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]))
        except OSError:
            continue
    return sum(sizes), max(sizes or [0])


def measure(name, cmd, env, sink, rounds):
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(5)
        pids = tree(proc.pid)
        c0, l0 = cpu_seconds(pids), sink.lines
        time.sleep(rounds)
        pids = tree(proc.pid)
        c1, l1 = cpu_seconds(pids), sink.lines
        total, largest = rss_kib(pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # diamond's collector processes ignore SIGTERM for a while.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    per_round_ms = (c1 - c0) / rounds * 1000
    return {"name": name, "ms": per_round_ms, "cpu_pct": (c1 - c0) / rounds * 100,
            "rss": total, "largest": largest, "procs": len(pids),
            "lines": (l1 - l0) / rounds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--diamond-python", default="/root/.pyenv/versions/2.7.18/bin/python2.7")
    ap.add_argument("--diamond-prefix", default="/tmp/dia/env")
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-agent-bench-")
    sink = Sink()
    interfaces = ["eth", "en", "lo", "docker", "br"]
    results = []
    try:
        conf = os.path.join(work, "agent.toml")
        with open(conf, "w") as f:
            f.write(f'destination = "127.0.0.1:{sink.port}"\nstatsd_addr = "127.0.0.1:0"\n')
            f.write('[collectors]\ninterval = 1\nhostname = "bench"\n')
            for c in COLLECTORS:
                f.write(f"[collectors.{c}]\n")
                if c == "network":
                    f.write(f"interfaces = {interfaces!r}\n".replace("'", '"'))
        results.append(measure("graunt agent", [args.graunt, "agent", "--config", conf],
                               dict(os.environ, RUST_LOG="warn"), sink, args.rounds))

        site = os.path.join(args.diamond_prefix, "lib/python2.7/site-packages")
        dconf = os.path.join(work, "diamond.conf")
        with open(dconf, "w") as f:
            f.write(f"""[server]
handlers = diamond.handler.graphite.GraphiteHandler
user =
group =
pid_file = {work}/diamond.pid
collectors_path = {args.diamond_prefix}/share/diamond/collectors/
collectors_config_path = {work}/collectors/
handlers_config_path = {work}/handlers/
handlers_path = {site}/diamond/handler/
collectors_reload_interval = 3600
[handlers]
keys = console
[[default]]
[[GraphiteHandler]]
host = 127.0.0.1
port = {sink.port}
batch = 1
[collectors]
[[default]]
interval = 1
hostname = bench
""")
            for n in DIAMOND_NAMES:
                f.write(f"[[{n}]]\nenabled = True\n")
                if n == "NetworkCollector":
                    f.write("interfaces = " + ", ".join(interfaces) + "\n")
            f.write("""[loggers]
keys = root
[formatters]
keys = default
[logger_root]
level = ERROR
handlers = console
propagate = 1
[handler_console]
class = StreamHandler
level = ERROR
formatter = default
args = (sys.stderr,)
[formatter_default]
format = %(message)s
datefmt =
""")
        os.makedirs(os.path.join(work, "collectors"), exist_ok=True)
        os.makedirs(os.path.join(work, "handlers"), exist_ok=True)
        env = dict(os.environ, PYTHONPATH=site)
        diamond = [args.diamond_python, os.path.join(args.diamond_prefix, "bin/diamond"),
                   "-f", "-c", dconf, "--skip-pidfile"]
        results.append(measure("diamond 4.0.515", diamond, env, sink, args.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    g = results[0]
    print("| program | CPU per round (9 collectors) | CPU share at 1 round/s | RSS (sum) | largest process | processes | lines per round |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['name']} | {r['ms']:.2f} ms | {r['cpu_pct']:.2f}% | {r['rss'] / 1024:.1f} MiB | "
              f"{r['largest'] / 1024:.1f} MiB | {r['procs']} | {r['lines']:.0f} |")
    if len(results) == 2 and g["ms"] > 0:
        d = results[1]
        print(f"\ndiamond / graunt: CPU {d['ms'] / g['ms']:.1f}x, RSS {d['rss'] / max(g['rss'], 1):.1f}x")


if __name__ == "__main__":
    sys.exit(main())
