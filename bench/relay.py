"""Relay throughput: plaintext in, pickle out to 3 destinations with
replication 2 (carbon_ch), graunt relay against Python carbon-relay 1.1.10
in the same run.

  python3 bench/relay.py [--lines 2000000] [--graunt target/release/graunt]
                         [--python .venv/bin/python] [--journal off,periodic]
                         [--tls]

Each destination is a sink process that unpickles every frame and counts
the points. The client sends LINES distinct lines over 2 TCP connections as
fast as the relay reads them; lines/s = LINES / time until the sinks hold
2 x LINES points (every replica). Relay CPU = user + system seconds of the
relay process over that time. graunt runs once per `--journal` mode: `off`
(queues in memory) or a `journal_sync` mode (every batch written to the
destinations' journals before it is acknowledged). With `--tls` the runs
are graunt and carbon-c-relay (Debian's, which sends plaintext lines to the
sinks), each with a plaintext listener and with a TLS one (a certificate
made with `openssl req`; the clients are Python `ssl` sockets). Results
print as Markdown rows.
"""
import argparse
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sink(host, port, counter):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(8)
    import threading

    def read(conn):
        buf = b""
        lines = None
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            if lines is None:
                # A pickle frame starts with its length (a zero byte first
                # for any frame under 16 MiB); plaintext with a name.
                lines = data[:1] != b"\0"
            if lines:
                with counter.get_lock():
                    counter.value += data.count(b"\n")
                continue
            buf += data
            n = 0
            while len(buf) >= 4:
                size = struct.unpack("!L", buf[:4])[0]
                if len(buf) < 4 + size:
                    break
                n += len(pickle.loads(buf[4:4 + size]))
                buf = buf[4 + size:]
            if n:
                with counter.get_lock():
                    counter.value += n

    while True:
        conn, _ = server.accept()
        threading.Thread(target=read, args=(conn,), daemon=True).start()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def send(port, payload, ca=None):
    s = socket.create_connection(("127.0.0.1", port))
    if ca:
        import ssl
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(payload)
    if ca:
        try:
            s = s.unwrap()
        except (OSError, ValueError):
            pass  # a relay that closes without TLS's close_notify
    s.close()


def make_certificate(work):
    """A self-signed certificate for 127.0.0.1 (cert, key, and both in one
    file for carbon-c-relay)."""
    cert, key, both = (os.path.join(work, n) for n in ("cert.pem", "key.pem", "both.pem"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return cert, key, both


def run(name, start, lines, ca=None):
    counter = multiprocessing.Value("q", 0)
    ports = [free_port() for _ in range(3)]
    # Three "hosts" on loopback (127.0.0.1-3), so replicas can be diverse.
    sinks = [multiprocessing.Process(target=sink, args=("127.0.0.%d" % (i + 1), p, counter), daemon=True)
             for i, p in enumerate(ports)]
    for s in sinks:
        s.start()
    time.sleep(0.5)
    proc, in_port = start(ports)
    t = int(time.time()) - 60
    halves = []
    for h in range(2):
        body = "".join("bench.h%d.m%d %d %d\n" % (h, i, i, t) for i in range(lines // 2))
        halves.append(body.encode())
    cpu0 = cpu_seconds(proc.pid)
    started = time.perf_counter()
    senders = [multiprocessing.Process(target=send, args=(in_port, h, ca)) for h in halves]
    for s in senders:
        s.start()
    deadline = started + 600
    want = 2 * (lines // 2) * 2
    while counter.value < want and time.perf_counter() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(proc.pid) - cpu0
    got = counter.value
    for s in senders:
        s.join()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    for s in sinks:
        s.terminate()
    rate = (got / 2) / elapsed
    print("%s: %d of %d replica points in %.2f s: %.0f lines/s, %.2f CPU s"
          % (name, got, want, elapsed, rate, cpu), file=sys.stderr)
    return rate, cpu, got == want, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000000)
    ap.add_argument("--graunt", default="target/release/graunt")
    ap.add_argument("--python", default=".venv/bin/python")
    ap.add_argument("--graunt-only", action="store_true", help="skip carbon-relay (for quick iterations)")
    ap.add_argument("--journal", default="off", help="graunt runs, comma-separated: off, periodic, always, never")
    ap.add_argument("--tls", action="store_true",
                    help="graunt and carbon-c-relay, each with a plaintext and a TLS listener")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="graunt-relay-bench-")

    def start_graunt(ports, journal, tls=None):
        port = free_port()
        conf = os.path.join(work, "relay.toml")
        with open(conf, "w") as f:
            f.write("replication = 2\nself_metrics_interval = 3600\nmax_queue = 10000000\n")
            if journal != "off":
                queues = os.path.join(work, "queues-%s" % journal)
                f.write('queue_dir = "%s"\njournal_sync = "%s"\n' % (queues, journal))
            f.write("destinations = [%s]\n" % ", ".join('"127.0.0.%d:%d:a"' % (i + 1, p) for i, p in enumerate(ports)))
            f.write('[[tenant]]\nname = "bench"\nmax_age = 100000000\n')
            if tls:
                f.write('listener = [{ protocol = "line", addr = "127.0.0.1:%d", '
                        'tls = { cert_file = "%s", key_file = "%s" } }]\n' % (port, tls[0], tls[1]))
            else:
                f.write('listener = [{ protocol = "line", addr = "127.0.0.1:%d" }]\n' % port)
        proc = subprocess.Popen([args.graunt, "relay", "--config", conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        return proc, port

    def start_carbon(ports):
        line = free_port()
        conf = os.path.join(work, "conf")
        storage = os.path.join(work, "storage")
        os.makedirs(conf, exist_ok=True)
        os.makedirs(os.path.join(storage, "log"), exist_ok=True)
        open(os.path.join(conf, "storage-schemas.conf"), "w").close()
        with open(os.path.join(conf, "carbon.conf"), "w") as f:
            f.write("[cache]\nSTORAGE_DIR = %s\nLOCAL_DATA_DIR = %s/whisper\nLOG_DIR = %s/log\nPID_DIR = %s\n\n"
                    % (storage, storage, storage, storage))
            f.write("[relay]\nLINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = %d\n"
                    "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\nPICKLE_RECEIVER_PORT = %d\n"
                    "ENABLE_UDP_LISTENER = False\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 2\n"
                    "DIVERSE_REPLICAS = True\nDESTINATIONS = %s\nMAX_QUEUE_SIZE = 10000000\n"
                    "MAX_DATAPOINTS_PER_MESSAGE = 5000\nUSE_FLOW_CONTROL = True\nCARBON_METRIC_INTERVAL = 0\n"
                    % (line, free_port(), ", ".join("127.0.0.%d:%d:a" % (i + 1, p) for i, p in enumerate(ports))))
        bindir = os.path.dirname(os.path.abspath(args.python))
        proc = subprocess.Popen([args.python, os.path.join(bindir, "carbon-relay.py"),
                                 "--config=%s" % os.path.join(conf, "carbon.conf"), "--nodaemon", "start"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", line)).close()
                break
            except OSError:
                time.sleep(0.1)
        return proc, line

    def start_c_relay(ports, tls=None):
        port = free_port()
        conf = os.path.join(work, "c-relay.conf")
        with open(conf, "w") as f:
            f.write("cluster sinks\n  carbon_ch replication 2\n")
            for i, p in enumerate(ports):
                f.write("    127.0.0.%d:%d=a\n" % (i + 1, p))
            f.write("  ;\nmatch * send to sinks;\nlisten\n  type linemode%s\n    127.0.0.1:%d proto tcp\n  ;\n"
                    % (" transport plain ssl %s" % tls[2] if tls else "", port))
        # -q 10000000: a queue as deep as graunt's and carbon-relay's here.
        proc = subprocess.Popen(["carbon-c-relay", "-f", conf, "-w", "2", "-q", "10000000", "-b", "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        return proc, port

    rows = []
    try:
        if args.tls:
            tls = make_certificate(work)
            for name, start, ca in [
                ("graunt relay, plaintext", lambda ports: start_graunt(ports, "off"), None),
                ("graunt relay, TLS", lambda ports: start_graunt(ports, "off", tls), tls[0]),
                ("carbon-c-relay 3.7.3, plaintext", lambda ports: start_c_relay(ports), None),
                ("carbon-c-relay 3.7.3, TLS", lambda ports: start_c_relay(ports, tls), tls[0]),
            ]:
                rows.append((name, run(name, start, args.lines, ca)))
            args.journal = ""
            args.graunt_only = True
        for journal in filter(None, args.journal.split(",")):
            name = "graunt relay" if journal == "off" else "graunt relay, journal %s" % journal
            g = run(name, lambda ports: start_graunt(ports, journal), args.lines)
            rows.append((name, g))
            print("%s: %.0f lines/s, %.2f CPU s" % (name, g[0], g[1]), file=sys.stderr)
        if not args.graunt_only:
            rows.append(("carbon-relay 1.1.10", run("carbon-relay 1.1.10", start_carbon, args.lines)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| peer | lines/s | relay CPU seconds | all replicas delivered |")
    print("| --- | --- | --- | --- |")
    for name, r in rows:
        print("| %s | %.0f | %.2f | %s |" % (name, r[0], r[1], "yes" if r[2] else "no (%.0f s)" % r[3]))


if __name__ == "__main__":
    sys.exit(main())
