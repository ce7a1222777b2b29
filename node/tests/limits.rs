//! `graunt serve` under abuse: thousands of idle connections, clients that
//! never send, a cache that fills up. It keeps serving, its memory stays
//! bounded, and it still shuts down cleanly.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::temp_dir;
use graunt_harness::unix_now as now;

const BIN: &str = env!("CARGO_BIN_EXE_graunt");

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_connections_do_not_stop_the_node() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let dir = temp_dir();
    let data = dir.path().join("data");
    let node = Node::serve(BIN.as_ref(), &data, &[]);
    let addr = node.addr("line");
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        idle.push(TcpStream::connect(addr).expect("connect an idle client"));
    }
    // A client that sends half a line and stalls.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"half.a.line 1").unwrap();
    wait_for(Duration::from_secs(30), "10,001 connections", || {
        (node.metric("graunt_connections") >= 10_001.0).then_some(())
    });
    let rss = rss_kib(node.pid());
    assert!(
        rss < 400 * 1024,
        "RSS {rss} KiB with 10,001 idle connections"
    );

    let t = now() - 30;
    TcpStream::connect(addr)
        .unwrap()
        .write_all(format!("busy.metric 3 {t}\n").as_bytes())
        .unwrap();
    wait_for(Duration::from_secs(10), "the busy client's point", || {
        (node.metric("graunt_points_received_total") >= 1.0).then_some(())
    });
    drop(idle);
    wait_for(Duration::from_secs(30), "idle connections to close", || {
        (node.metric("graunt_connections") <= 1.0).then_some(())
    });
    node.stop(Duration::from_secs(20));
    assert!(data.join("whisper/busy/metric.wsp").exists());
    assert!(
        !data.join("whisper/half").exists(),
        "an unterminated line must not be stored"
    );
}

#[test]
fn a_full_cache_slows_tcp_clients_and_drops_udp_with_a_count() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let config = dir.path().join("graunt.toml");
    std::fs::write(
        &config,
        "max_cache_size = 2000\nmax_updates_per_second = 0.001\n",
    )
    .unwrap();
    // Small files: the drain at shutdown creates one per accepted metric.
    let schemas = dir.path().join("storage-schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 10s:10m\n").unwrap();
    let node = Node::serve(
        BIN.as_ref(),
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--schemas",
            schemas.to_str().unwrap(),
        ],
    );
    let t = now() - now() % 10 - 60;

    let addr = node.addr("line");
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut sent = 0;
        for chunk in 0..50 {
            let lines: String = (0..1000)
                .map(|i| format!("flood.m{} {i} {t}\n", chunk * 1000 + i))
                .collect();
            if s.write_all(lines.as_bytes()).is_err() {
                break;
            }
            sent += 1000;
        }
        sent
    });
    wait_for(Duration::from_secs(10), "the cache to fill", || {
        (node.metric("graunt_cache_points") >= 2000.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let received = node.metric("graunt_points_received_total");
    assert!(
        received < 10_000.0,
        "TCP must be held back when the cache is full, {received} accepted"
    );

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        format!("flood.udp 1 {t}\nflood.udp2 2 {t}\n").as_bytes(),
        node.addr("udp"),
    )
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the UDP drop to be counted",
        || (node.metric("graunt_points_dropped_total") >= 2.0).then_some(()),
    );
    let rss = rss_kib(node.pid());
    assert!(
        rss < 200 * 1024,
        "RSS {rss} KiB with a full cache of 2,000 points"
    );
    // A blocked client does not hold up shutdown; what was accepted is written.
    let accepted = node.metric("graunt_points_received_total") as u64;
    node.stop(Duration::from_secs(30));
    let sent: u64 = sender.join().unwrap();
    assert!(sent >= accepted);
    // Batches already read when shutdown began are accepted too, so there may
    // be more files than the count sampled before it, never fewer.
    let files = walk(&data.join("whisper/flood")) as u64;
    assert!(
        files >= accepted && files <= sent,
        "{files} files, {accepted} accepted, {sent} sent"
    );
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { walk(&p) } else { 1 })
            .sum()
    })
}
