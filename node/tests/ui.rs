//! The browser UI at `/` in a real headless Chromium (Debian's `chromium`
//! and `chromium-driver`): browse the tree, add two targets, change the
//! range, see the graph load, see a failing target's message, save a
//! dashboard and reopen it. With `GRAUNT_SCREENSHOTS=<dir>` the test also
//! writes the screenshots shown in the README.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::webdriver::Browser;
use graunt_harness::{temp_dir, unix_now};
use serde_json::{json, Value};

/// Two days of minutely points for three hosts' cpu and load.
fn feed(node: &Node) {
    let now = unix_now();
    let mut lines = String::new();
    for (h, host) in ["web1", "web2", "db1"].iter().enumerate() {
        for (m, metric) in ["cpu.user", "cpu.system", "load"].iter().enumerate() {
            for i in 0..2880 {
                let t = now - 172_800 + i * 60;
                let v = 50.0 + 40.0 * ((i as f64) / 300.0 + (h * 3 + m) as f64).sin();
                lines.push_str(&format!("servers.{host}.{metric} {v:.3} {t}\n"));
            }
        }
    }
    let mut s = TcpStream::connect(node.addr("line")).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    drop(s);
    wait_for(
        Duration::from_secs(20),
        "the points to be queryable",
        || {
            let body = node.http_get("/metrics/find?query=servers.db1.*");
            body.contains("load").then_some(())
        },
    );
}

/// How many times a graph's image has loaded (the UI counts them).
fn loads(b: &Browser, graph: usize) -> u64 {
    b.eval(
        "const g = document.querySelectorAll('#graphs .graph')[arguments[0]]; \
         return g ? Number(g.dataset.loaded || 0) : -1;",
        vec![json!(graph)],
    )
    .as_u64()
    .unwrap_or(0)
}

fn targets(b: &Browser) -> Vec<String> {
    let v = b.eval(
        "return [...document.querySelectorAll('#graphs .graph .target')].map(t => t.value);",
        vec![],
    );
    serde_json::from_value(v).unwrap()
}

fn shoot(b: &Browser, name: &str) {
    let png = b.screenshot();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let reader = decoder.read_info().expect("a PNG screenshot");
    assert!(reader.info().width >= 1000, "screenshot width");
    if let Some(dir) = std::env::var_os("GRAUNT_SCREENSHOTS") {
        std::fs::write(std::path::Path::new(&dir).join(name), &png).unwrap();
    }
}

#[test]
fn browse_graph_and_keep_a_dashboard_in_chromium() {
    let dir = temp_dir();
    let schemas = dir.path().join("storage-schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 1m:30d\n").unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--schemas", schemas.to_str().unwrap()],
    );
    feed(&node);
    let base = format!("http://{}", node.addr("http"));
    let b = Browser::start(1400, 900);
    b.goto(&format!("{base}/"));

    // Browse the tree: servers ▸ web1 ▸ load, then web1 ▸ cpu ▸ user.
    b.click(&b.find("#tree li[data-id='servers'] > .label"));
    b.click(&b.find("li[data-id='servers.web1'] > .label"));
    b.click(&b.find("li[data-id='servers.web1.load'] > .label"));
    b.click(&b.find("li[data-id='servers.web1.cpu'] > .label"));
    b.click(&b.find("li[data-id='servers.web1.cpu.user'] > .label"));
    wait_for(Duration::from_secs(20), "two targets", || {
        (targets(&b) == ["servers.web1.load", "servers.web1.cpu.user"]).then_some(())
    });
    wait_for(Duration::from_secs(20), "the graph image", || {
        (loads(&b, 0) >= 1).then_some(())
    });
    let size = b.eval(
        "const i = document.querySelector('#graphs .graph .image'); \
         return [i.naturalWidth, i.naturalHeight, i.hidden];",
        vec![],
    );
    assert!(size[0].as_u64().unwrap() >= 300, "{size}");
    assert_eq!(size[1], json!(300), "{size}");
    assert_eq!(size[2], json!(false));

    // Search finds a leaf by text; clicking it adds a target.
    b.type_text(&b.find("#search"), "db1.lo");
    b.click(&b.find("#results li[data-id='servers.db1.load'] > .label"));
    wait_for(Duration::from_secs(20), "the searched target", || {
        (targets(&b).len() == 3).then_some(())
    });
    // A function from /functions applied to the checked target only.
    b.click(&b.find("#graphs .graph .targets li:nth-child(3) .pick"));
    b.type_text(&b.find("#graphs .graph .args"), "\"db\"");
    b.click(&b.find("#graphs .graph .function option[value='alias']"));
    wait_for(Duration::from_secs(20), "the aliased target", || {
        (targets(&b)[2] == "alias(servers.db1.load, \"db\")").then_some(())
    });

    // Change the range: the image is fetched again, for the new range.
    let before = loads(&b, 0);
    b.click(&b.find("#range option[value='-7d']"));
    wait_for(Duration::from_secs(20), "the graph for 7 days", || {
        (loads(&b, 0) > before).then_some(())
    });
    let link = b.eval(
        "return document.querySelector('#graphs .graph .link').href;",
        vec![],
    );
    assert!(link.as_str().unwrap().contains("from=-7d"), "{link}");
    shoot(&b, "ui-graph.png");

    // A second graph with a failing target shows the server's message.
    b.click(&b.find("#add-graph"));
    let input = b.find("#graphs .graph:nth-child(2) .new-target");
    b.type_text(&input, "nosuchfunction(servers.web1.load)\u{E007}");
    let error = b.find("#graphs .graph:nth-child(2) .error:not([hidden])");
    let message = b.text(&error);
    assert!(message.contains("nosuchfunction"), "{message}");
    b.click(&b.find("#graphs .graph:nth-child(2) .remove"));

    // The URL holds the whole view: opening it elsewhere shows the same.
    let shared = b.url();
    assert!(shared.contains('#'), "{shared}");

    // Save a dashboard; it is on the node.
    b.type_text(&b.find("#dash-name"), "ops overview");
    b.click(&b.find("#dash-save"));
    wait_for(Duration::from_secs(20), "the save", || {
        b.text(&b.find("#status")).contains("saved").then_some(())
    });
    let saved: Value = serde_json::from_str(&node.http_get("/dashboard/load/ops%20overview"))
        .expect("the dashboard as JSON");
    assert_eq!(
        saved["state"]["graphs"][0]["targets"],
        json!([
            "servers.web1.load",
            "servers.web1.cpu.user",
            "alias(servers.db1.load, \"db\")"
        ])
    );
    assert_eq!(saved["state"]["from"], json!("-7d"));

    // A fresh page: empty; reopen the dashboard from the list.
    b.goto(&format!("{base}/"));
    b.find("#graphs .graph .empty");
    assert!(targets(&b).is_empty());
    b.click(&b.find("#dash-list option[value='ops overview']"));
    wait_for(Duration::from_secs(20), "the reopened dashboard", || {
        (targets(&b).len() == 3 && loads(&b, 0) >= 1).then_some(())
    });
    assert_eq!(
        b.eval("return document.querySelector('#range').value;", vec![]),
        json!("-7d")
    );

    // And the shared link, in a fresh page, shows that view too.
    b.goto("about:blank");
    b.goto(&shared);
    wait_for(Duration::from_secs(20), "the shared view", || {
        (targets(&b).len() == 3 && loads(&b, 0) >= 1).then_some(())
    });
    b.click(&b.find("#tree li[data-id='servers'] > .label"));
    b.click(&b.find("li[data-id='servers.db1'] > .label"));
    b.find("li[data-id='servers.db1.load']");
    shoot(&b, "ui-tree.png");
    drop(b);
    node.stop(Duration::from_secs(20));
}

#[test]
fn dashboard_endpoints_refuse_bad_input() {
    let dir = temp_dir();
    let node = Node::start(&dir.path().join("data"), &[]);
    let (status, body) = node.http_post_form("/dashboard/save/..%2Fescape", "state=%7B%7D");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid dashboard name"), "{body}");
    let (status, body) = node.http_post_form("/dashboard/save/ok", "state=not%20json");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not JSON"), "{body}");
    let (status, body) = node.http_post_form("/dashboard/save/ok", "other=1");
    assert_eq!(status, 400, "{body}");
    let (status, body) = node.http_request("/dashboard/load/missing");
    assert_eq!(status, 404, "{body}");
    let (status, _) = node.http_post_form("/dashboard/save/ok", "state=%7B%22a%22%3A1%7D");
    assert_eq!(status, 200);
    let found: Value = serde_json::from_str(&node.http_get("/dashboard/find?query=O")).unwrap();
    assert_eq!(found, json!({"dashboards": [{"name": "ok"}]}));
    let (status, _) = node.http_post_form("/dashboard/delete/ok", "");
    assert_eq!(status, 200);
    assert_eq!(node.http_request("/dashboard/load/ok").0, 404);
    node.stop(Duration::from_secs(20));
}

/// A host's dashboard: an agent collects this machine every second into
/// the node; a dashboard of its cpu, memory, load, network and disks is
/// saved through graphite-web's endpoint and opened in the UI, every graph
/// drawn from what the collectors sent (the README's screenshot).
#[test]
fn a_hosts_dashboard_of_collected_metrics() {
    let dir = temp_dir();
    let schemas = dir.path().join("storage-schemas.conf");
    std::fs::write(&schemas, "[all]\npattern = .*\nretentions = 1s:1h,1m:1d\n").unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--schemas", schemas.to_str().unwrap()],
    );
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "[collectors]\nhostname = \"web01\"\ninterval = 1\n\
         [collectors.network]\ninterfaces = [\"lo\", \"eth\", \"en\"]\n\
         [collectors.diskusage]\nsend_zero = true\n",
    )
    .unwrap();
    let agent = graunt_harness::agent::Agent::start(&[
        "--config",
        agent_config.to_str().unwrap(),
        "--destination",
        &node.addr("line").to_string(),
    ]);
    let series = |pattern: &str| -> usize {
        let body = node.http_get(&format!("/render?target={pattern}&from=-40s&format=json"));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v.as_array().map_or(0, |a| {
            a.iter()
                .filter(|s| {
                    s["datapoints"]
                        .as_array()
                        .is_some_and(|d| d.iter().filter(|p| p[0].is_number()).count() >= 20)
                })
                .count()
        })
    };
    wait_for(
        Duration::from_secs(60),
        "ten seconds of every collector",
        || {
            (series("servers.web01.cpu.total.*") >= 8
                && series("servers.web01.memory.*") >= 10
                && series("servers.web01.loadavg.*") >= 8
                && series("servers.web01.network.lo.*") >= 10
                && series("servers.web01.iostat.*.util_percentage") >= 1)
                .then_some(())
        },
    );
    let graphs = json!([
        {"title": "CPU (jiffies/s)", "targets": ["aliasByNode(stacked(servers.web01.cpu.total.{user,system,iowait,steal}),4)"]},
        {"title": "Memory", "targets": ["aliasByNode(servers.web01.memory.{MemFree,Cached,Buffers,Dirty},3)"]},
        {"title": "Load", "targets": ["aliasByNode(servers.web01.loadavg.{01,05,15},3)"]},
        {"title": "Network (bytes/s)", "targets": ["aliasByNode(servers.web01.network.*.{rx_byte,tx_byte},3,4)"]},
        {"title": "Disk utilisation (%)", "targets": ["aliasByNode(servers.web01.iostat.*.util_percentage,3)"]},
        {"title": "Disk space free (%)", "targets": ["aliasByNode(servers.web01.diskspace.*.byte_percentfree,3)"]}
    ]);
    let view = json!({"from": "-40s", "until": "", "refresh": 0, "graphs": graphs});
    let body = format!("state={}", url_encode(&view.to_string()));
    let (status, _) = node.http_post_form("/dashboard/save/web01", &body);
    assert_eq!(status, 200);
    let base = format!("http://{}", node.addr("http"));
    let b = Browser::start(1400, 1100);
    b.goto(&format!("{base}/"));
    b.click(&b.find("#dash-list option[value='web01']"));
    wait_for(
        Duration::from_secs(30),
        "every graph of the host's dashboard",
        || (targets(&b).len() == 6 && (0..6).all(|g| loads(&b, g) >= 1)).then_some(()),
    );
    // Every graph drew a picture, none an error.
    let errors = b.eval(
        "return [...document.querySelectorAll('#graphs .graph .error')].filter(e => !e.hidden).length;",
        vec![],
    );
    assert_eq!(errors, json!(0));
    shoot(&b, "ui-host-dashboard.png");
    drop(b);
    agent.stop();
    node.stop(Duration::from_secs(20));
}

/// Percent-encodes a form value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
