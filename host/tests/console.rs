//! The web console in a real browser: two real nodes (one with a token),
//! headless Chromium from Debian's `chromium` package driven by
//! `playwright-core` (tools/browser/console.mjs, installed by `make
//! browser`), and real guests: a two-i32 core module built here from WAT
//! and the echo handler. The script runs the page as a person would and
//! checks what it shows; this test checks the script's verdict and then the
//! node's own state behind the page. Screenshots land in
//! target/console-screenshots/.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{component, up, NodeBuilder};

/// The whole browser run (both nodes, every page) must end within this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "console-test-token";

/// The add module of the WASM executor's examples: `add(i32, i32) -> i32`.
const ADD_WAT: &str = r#"(module
  (func (export "add") (param i32 i32) (result i32)
    local.get 0
    local.get 1
    i32.add))"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `make browser` installs; without it the test cannot run.
fn require_browser() -> PathBuf {
    let script = repo().join("tools/browser/console.mjs");
    let driver = repo().join("tools/browser/node_modules/playwright-core/package.json");
    assert!(
        Path::new("/usr/bin/chromium").exists() && driver.exists(),
        "the console tests need /usr/bin/chromium and tools/browser/node_modules: run `make browser`"
    );
    script
}

/// Runs the browser script to completion (killed past the deadline);
/// answers whether it succeeded and what it printed.
fn run_script(script: &Path, config: &serde_json::Value) -> (bool, String) {
    let mut child = Command::new("node")
        .arg(script)
        .arg(config.to_string())
        .current_dir(repo().join("tools/browser"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node (Node.js is needed for the console tests)");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    match status {
        Some(status) => (status.success(), printed),
        None => (
            false,
            format!("{printed}\nthe browser script ran past {SCRIPT_TIMEOUT:?}"),
        ),
    }
}

#[test]
fn console_in_a_real_browser() {
    let script = require_browser();
    let open_dir = tempfile::tempdir().expect("tempdir");
    let token_dir = tempfile::tempdir().expect("tempdir");
    let files = tempfile::tempdir().expect("tempdir");
    let module = files.path().join("add.wasm");
    std::fs::write(&module, wat::parse_str(ADD_WAT).expect("valid WAT")).expect("write add.wasm");
    let shots = repo().join("target/console-screenshots");

    let open = up(open_dir.path(), &[]);
    let guarded = NodeBuilder::new(token_dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", TOKEN)
        .start();

    let config = json!({
        "url": format!("http://{}", open.addr),
        "tokenUrl": format!("http://{}", guarded.addr),
        "token": TOKEN,
        "module": module,
        "echo": component("echo.wasm"),
        "shots": shots,
    });
    let (ok, printed) = run_script(&script, &config);
    println!("{printed}");
    assert!(ok, "the browser script failed:\n{printed}");
    assert!(
        printed.contains("console: all scenarios passed"),
        "{printed}"
    );

    // What the page showed is what the nodes hold.
    let runs = open.get("/handlers/echo/runs?limit=100").json();
    let outputs: Vec<&str> = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["output"].as_str())
        .collect();
    assert!(outputs.contains(&"hello console"), "{runs}");
    assert!(outputs.contains(&"tick"), "{runs}");
    let workflow_runs = open.get("/workflows/greet/runs").json();
    assert_eq!(workflow_runs[0]["ok"], true, "{workflow_runs}");
    assert_eq!(guarded.get("/handlers/echo").status, 200);
    for page in [
        "run",
        "handlers",
        "schedules",
        "workflows-error",
        "workflows",
        "token",
    ] {
        for suffix in ["", "-390"] {
            let file = shots.join(format!("{page}{suffix}.png"));
            assert!(file.exists(), "no screenshot {}", file.display());
        }
    }
}

#[test]
fn console_assets_and_redirect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = up(dir.path(), &[]);
    let browser = node.request("GET", "/", &[("accept", "text/html,*/*")], b"");
    assert_eq!(browser.status, 303);
    assert_eq!(browser.header("location"), Some("/ui/"));
    // API clients keep the answer they had.
    assert_eq!(node.get("/").status, 405);
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let answer = node.get(path);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        let policy = answer.header("content-security-policy").unwrap_or_default();
        assert!(policy.starts_with("default-src 'self'"), "{path}: {policy}");
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
    }
    assert_eq!(
        node.get("/ui/nope.js").error(404),
        "no console file `nope.js`"
    );
    // Inspecting keeps nothing.
    let inspected = node.post("/inspect", &wat::parse_str(ADD_WAT).expect("valid WAT"));
    assert_eq!(inspected.status, 200, "{}", inspected.text());
    assert_eq!(
        inspected.json(),
        json!({"kind": "module", "exports": [{"name": "add", "signature": "add(i32, i32) -> (i32)"}], "imports": []})
    );
    let wasip1_job = repo().join("target/wasm32-wasip1/release/json-job.wasm");
    for (bytes, kind) in [
        (support::component_bytes("echo.wasm"), "handler"),
        (support::component_bytes("caesar.wasm"), "component"),
        (support::component_bytes("json-job.wasm"), "command"),
        (
            std::fs::read(&wasip1_job).expect("make components builds json-job for wasip1"),
            "job",
        ),
    ] {
        let found = node.post("/inspect", &bytes);
        assert_eq!(found.status, 200, "{}", found.text());
        assert_eq!(found.json()["kind"], kind, "{}", found.text());
    }
    let caesar = node
        .post("/inspect", &support::component_bytes("caesar.wasm"))
        .json();
    assert_eq!(
        caesar["exports"][0],
        json!({"name": "encrypt", "signature": "encrypt(text: string) -> string"})
    );
    assert_eq!(node.get("/handlers").json(), json!([]));
    assert!(node
        .post("/inspect", b"not wasm")
        .error(400)
        .contains("not a WebAssembly binary"));
}
