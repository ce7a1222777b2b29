//! Helpers shared by graunt's tests: locating the Python reference
//! implementations (whisper, carbon, graphite-web) that `.ci/run` installs
//! into `.venv`, and running their scripts with a fixed clock so their output
//! can be compared with graunt's.
//!
//! It starts services for end-to-end tests: nodes, relays and agents
//! in-process on port 0 ([`node::Node::start`], [`relay::Relay::start`],
//! [`cluster::TestCluster::start`]), or the real `graunt` binary where a
//! process matters (signals, `kill -9`, the CLI, the image). Those tests
//! live in `node/tests/`, where Cargo guarantees the binary is built.

use std::io::Write;
pub mod agent;
pub mod cluster;
pub mod in_process;
pub mod node;
pub mod relay;
pub mod tls;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Python interpreter of the oracle venv: `$GRAUNT_ORACLE_PYTHON`, else
/// `<workspace>/.venv/bin/python`, created on first use (`python3 -m venv`,
/// then `pip install -r tests/oracle/requirements.txt`) under a file lock so
/// parallel test processes build it once. An oracle that cannot be installed
/// fails the test: a test that silently skipped could not fail.
pub fn oracle_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| match std::env::var_os("GRAUNT_ORACLE_PYTHON") {
            Some(p) => PathBuf::from(p),
            None => ensure_venv(),
        })
        .clone()
}

fn ensure_venv() -> PathBuf {
    let root = workspace_root();
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    let requirements = root.join("tests/oracle/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("tests/oracle/requirements.txt");
    let stamp = venv.join("graunt-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let lock_path = root.join("target/oracle-venv.lock");
    std::fs::create_dir_all(lock_path.parent().expect("target dir")).expect("create target/");
    let lock = std::fs::File::create(&lock_path).expect("create the venv lock file");
    // Held while installing: other test processes wait here, then see the stamp.
    lock.lock().expect("lock the venv lock file");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !python.exists() {
            let status = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "`python3 -m venv .venv` failed"
            );
        }
        // graphite-web installs into site-packages only with this set.
        let status = Command::new(&python)
            .env("GRAPHITE_NO_PREFIX", "True")
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "installing the Python oracles failed: `.venv/bin/pip install -r tests/oracle/requirements.txt`"
        );
        std::fs::write(&stamp, &wanted).expect("write the venv stamp");
    }
    python
}

/// The folder of the oracle venv's scripts (`whisper-fetch.py`, …).
pub fn oracle_bin_dir() -> PathBuf {
    oracle_python()
        .parent()
        .expect("python lives in a bin dir")
        .to_path_buf()
}

/// A command running a venv script (`whisper-fetch.py`, …) with
/// `time.time()` pinned to `now`, so its defaults and "now" match a graunt
/// run given `--now`. Set its working directory and environment as needed.
pub fn python_script(script: &str, args: &[&str], now: i64) -> Command {
    let script_path = oracle_bin_dir().join(script);
    let boot = format!(
        "import sys, time, runpy\n\
         time.time = lambda: {now}\n\
         sys.argv = [{script:?}] + sys.argv[1:]\n\
         runpy.run_path({path:?}, run_name='__main__')\n",
        path = script_path.display().to_string(),
    );
    let mut cmd = Command::new(oracle_python());
    cmd.arg("-c").arg(boot).args(args);
    cmd
}

/// Runs the JSON-driven oracle in `tests/oracle/whisper_oracle.py`: `ops` is
/// a list of operations, the answer one result per operation.
pub fn whisper_oracle(ops: &serde_json::Value) -> serde_json::Value {
    let script = workspace_root().join("tests/oracle/whisper_oracle.py");
    let out = run_with_stdin(Command::new(oracle_python()).arg(script), &ops.to_string());
    assert!(
        out.status.success(),
        "whisper oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the oracle prints JSON")
}

/// Runs `cmd` feeding `stdin`, capturing stdout and stderr.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // A child may exit without reading its input (openssl s_client when
    // the handshake is refused): its answer is what it printed.
    match child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("write stdin: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("wait for child")
}

/// Seconds since the epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The value a node's data directory holds for metric `name` at `ts`, read
/// through the storage library (the slot whose interval contains `ts`).
pub fn stored_value(data_dir: &Path, name: &str, ts: i64) -> Option<f64> {
    let path = data_dir
        .join("whisper")
        .join(name.replace('.', "/") + ".wsp");
    let file = graunt_storage::whisper::WhisperFile::open(path).ok()?;
    let series = file.fetch(ts - 1, Some(ts), unix_now(), None).ok()??;
    series.values.first().copied().flatten()
}

/// A fresh temporary directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("graunt-test-")
        .tempdir()
        .expect("create temp dir")
}

/// Percent-encodes a query-string value (everything but unreserved bytes).
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether two JSON values are equal, numbers compared as numbers
/// (graphite-web writes Python ints, `1`, where graunt's series hold
/// floats, `1.0`).
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
