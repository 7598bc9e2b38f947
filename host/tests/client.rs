//! The command-line client (`wasmatic register`, `run`, `ls`, …), run as the
//! real binary against a real node, with real components.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{component, free_port, Node, NodeBuilder};

/// How long one client command may take (registering compiles).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The exit codes the client documents.
const EXIT_NODE_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_UNREACHABLE: i32 = 3;

/// What a client command did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Asserts success; returns stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self.stdout
    }

    /// Asserts exit `code` and a message naming `text`; returns stderr.
    fn fails(self, code: i32, text: &str) -> String {
        assert_eq!(self.code, Some(code), "stdout: {}", self.stdout);
        assert!(
            self.stderr.contains(text),
            "expected `{text}` in: {}",
            self.stderr
        );
        self.stderr
    }

    fn json(self) -> Value {
        let stdout = self.ok();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }
}

/// `wasmatic ARGS` with `$WASMATIC_NODE` = `node` and the given token.
fn client(node: &str, token: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmatic"));
    command
        .env("WASMATIC_NODE", node)
        .env_remove("WASMATIC_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::piped());
    if let Some(token) = token {
        command.env("WASMATIC_TOKEN", token);
    }
    command
}

/// Runs `command` with `args` and `stdin` to its end (killed after
/// [`COMMAND_TIMEOUT`]).
fn run_with(mut command: Command, args: &[&str], stdin: &[u8]) -> Ran {
    let mut child = command.args(args).spawn().expect("spawn wasmatic");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let failure = format!("wasmatic {args:?} did not finish");
    let status = support::wait_exit(&mut child, COMMAND_TIMEOUT, &failure);
    Ran {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// A client of one node.
struct Client {
    url: String,
    token: Option<String>,
}

impl Client {
    fn of(node: &Node) -> Client {
        Client {
            url: format!("http://{}", node.addr),
            token: None,
        }
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_stdin(args, b"")
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Ran {
        run_with(client(&self.url, self.token.as_deref()), args, stdin)
    }
}

fn start_node(dir: &Path) -> Node {
    NodeBuilder::new(dir, &["up"])
        .env("WASMATIC_PORT", "0")
        .start()
}

fn path(file: &str) -> String {
    component(file).display().to_string()
}

/// A child killed when dropped, so that a failed assertion never leaves a
/// `--follow` running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn client_commands_register_run_call_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let cli = Client::of(&node);

    // Register: the name defaults to the file's; options go in the query.
    let out = cli.run(&["register", &path("echo.wasm")]).ok();
    assert!(out.contains("registered echo"), "{out}");
    assert!(out.contains("handler(input: string) -> string"), "{out}");
    let out = cli
        .run(&[
            "register",
            &path("caesar.wasm"),
            "--name",
            "caesar",
            "--env",
            "SHIFT_AMOUNT=5",
            "--reuse",
            "2",
            "--allow",
            "a.example",
            "--allow",
            "*.b.example",
        ])
        .ok();
    assert!(out.contains("config: SHIFT_AMOUNT"), "{out}");
    let info = cli.run(&["show", "caesar", "--json"]).json();
    assert_eq!(info["reuse"], 2);
    assert_eq!(info["allow_outbound"], json!(["a.example", "*.b.example"]));
    cli.run(&["register", &path("typed.wasm")]).ok();

    // ls: a table for people, the node's JSON for scripts.
    let table = cli.run(&["ls"]).ok();
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("KIND"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("caesar ") && l.contains("component")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("echo ") && l.contains("handler")),
        "{table}"
    );
    let list = cli.run(&["ls", "--json"]).json();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["caesar", "echo", "typed"]);
    let shown = cli.run(&["show", "caesar"]).ok();
    assert!(shown.contains("encrypt(text: string) -> string"), "{shown}");

    // run: the input as an argument, or from stdin with `-`.
    assert_eq!(
        cli.run(&["run", "echo", "hello, wasm"]).ok(),
        "hello, wasm\n"
    );
    assert_eq!(
        cli.run_stdin(&["run", "echo", "-"], b"from stdin\n").ok(),
        "from stdin\n"
    );

    // call: each argument is JSON when it parses, else a string.
    assert_eq!(
        cli.run(&["call", "caesar", "encrypt", "Hello, World"]).ok(),
        "Mjqqt, Btwqi\n"
    );
    let answer = cli
        .run(&[
            "call",
            "typed",
            "shapes.area",
            r#"{"rect": {"x": 2, "y": 3}}"#,
            "--json",
        ])
        .json();
    assert_eq!(answer, json!({ "result": 6.0 }));
    let err = cli
        .run(&["call", "caesar", "encrypt", "42"])
        .fails(EXIT_NODE_ERROR, "encrypt(text: string) -> string");
    assert!(err.contains("HTTP 400"), "{err}");

    // runs: oldest first, with what started each; --json as the node answers.
    let runs = cli.run(&["runs", "echo"]).ok();
    let lines: Vec<&str> = runs.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("OUTPUT"),
        "{runs}"
    );
    assert!(lines[1].contains("hello, wasm"), "{runs}");
    assert!(lines[2].contains("from stdin"), "{runs}");
    let calls = cli
        .run(&["runs", "caesar", "--json", "--limit", "1"])
        .json();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"], "encrypt");

    // Errors from the node: its message, exit 1; the node keeps serving.
    cli.run(&["show", "nobody"])
        .fails(EXIT_NODE_ERROR, "no handler `nobody`");
    cli.run(&["run", "Bad Name"])
        .fails(EXIT_NODE_ERROR, "is not a handler name");
    // An upload over 1 MiB goes out in chunks (no bar: stderr is no
    // terminal) and the node's refusal comes back.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, vec![7u8; 2 * 1024 * 1024 + 3]).unwrap();
    let err = cli
        .run(&["register", garbage.to_str().unwrap(), "--name", "junk"])
        .fails(EXIT_NODE_ERROR, "not a WebAssembly binary");
    assert!(!err.contains("uploading"), "{err}");

    // rm: gone, and said so when asked again.
    assert_eq!(cli.run(&["rm", "typed"]).ok(), "removed typed\n");
    cli.run(&["rm", "typed"])
        .fails(EXIT_NODE_ERROR, "no handler `typed`");

    // Usage errors: exit 2, before anything is sent.
    cli.run(&["register", "/no/such/file.wasm"])
        .fails(EXIT_USAGE, "cannot read /no/such/file.wasm");
    cli.run(&["ls", "--node", "ftp://127.0.0.1"])
        .fails(EXIT_USAGE, "is not http or https");
    cli.run(&["register", &path("echo.wasm"), "--env", "NOEQUALS"])
        .fails(EXIT_USAGE, "KEY=VALUE");
}

#[test]
fn client_schedules_follows_runs_and_runs_jobs_and_workflows() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let cli = Client::of(&node);
    cli.run(&["register", &path("echo.wasm")]).ok();
    cli.run(&["register", &path("caesar.wasm"), "--env", "SHIFT_AMOUNT=5"])
        .ok();

    // sched: every second; the schedule shows under its handler.
    let schedule = cli
        .run(&["sched", "echo", "*/1 * * * * *", "tick", "--json"])
        .json();
    let id = schedule["id"].as_str().expect("schedule id").to_string();
    assert_eq!(schedule["input"], "tick");
    let shown = cli.run(&["show", "echo"]).ok();
    assert!(
        shown.contains(&id) && shown.contains("*/1 * * * * *"),
        "{shown}"
    );

    // runs --follow: the latest run, then each new one as it is recorded.
    let mut command = client(&cli.url, None);
    command
        .args(["runs", "echo", "--follow", "--limit", "1", "--json"])
        .stdin(Stdio::null());
    let mut follow = Killed(command.spawn().expect("spawn wasmatic runs --follow"));
    let (tx, rx) = mpsc::channel();
    let stdout = follow.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("--follow showed only runs {ids:?}"));
        let run: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(run["output"], "tick", "{run}");
        assert_eq!(run["job_id"], id.as_str(), "{run}");
        ids.push(run["id"].as_u64().expect("run id"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    drop(follow);

    // unsched: removed, and an unknown id is the node's 404.
    assert_eq!(
        cli.run(&["unsched", &id]).ok(),
        format!("removed schedule {id}\n")
    );
    cli.run(&["unsched", &id])
        .fails(EXIT_NODE_ERROR, &format!("no schedule `{id}`"));

    // job: a WASI command; its result printed, a failure exits 1.
    let job = path("json-job.wasm");
    let out = cli.run(&["job", &job, "--input", r#"{"n": 21}"#]).ok();
    let result: Value = serde_json::from_str(&out).expect("job result");
    assert_eq!(result, json!({ "doubled": 42 }));
    let answer = cli
        .run(&[
            "job",
            &job,
            "--input",
            r#"{"n": 2}"#,
            "--json",
            "--id",
            "j7",
        ])
        .json();
    assert_eq!(answer["jobId"], "j7");
    assert_eq!(answer["result"]["doubled"], 4);
    cli.run(&["job", &job, "--input", r#"{"mode": "fail"}"#])
        .fails(EXIT_NODE_ERROR, "asked to fail");
    cli.run(&["job", &job, "--input", "{not json"])
        .fails(EXIT_USAGE, "--input is not JSON");

    // workflow apply | run | runs.
    let definition = dir.path().join("greet.json");
    std::fs::write(
        &definition,
        json!({
            "name": "greet",
            "steps": [
                { "id": "hi", "type": "run", "handler": "echo", "input": "hi {{ trigger.who }}" },
                { "id": "enc", "type": "call", "component": "caesar", "function": "encrypt",
                  "args": ["{{ steps.hi.output }}"] }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let applied = cli
        .run(&["workflow", "apply", definition.to_str().unwrap()])
        .ok();
    assert_eq!(applied, "applied workflow greet (2 steps)\n");
    let out = cli
        .run(&["workflow", "run", "greet", r#"{"who": "bob"}"#])
        .ok();
    assert!(
        out.lines()
            .any(|l| l.starts_with("hi ") && l.contains("hi bob")),
        "{out}"
    );
    assert!(out.contains("result: mn gtg"), "{out}");
    let run = cli
        .run(&["workflow", "run", "greet", "--json", r#"{"who": "al"}"#])
        .json();
    assert_eq!(run["result"], "mn fq");
    let runs = cli.run(&["workflow", "runs", "greet"]).ok();
    assert_eq!(runs.lines().count(), 3, "a header and two runs: {runs}");
    assert!(runs.lines().nth(2).unwrap().contains("mn fq"), "{runs}");
    let runs = cli.run(&["workflow", "runs", "greet", "--json"]).json();
    assert_eq!(runs.as_array().map(Vec::len), Some(2));
    cli.run(&["workflow", "run", "nowhere"])
        .fails(EXIT_NODE_ERROR, "nowhere");
}

#[test]
fn client_sends_the_token_and_tells_an_unreachable_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .env("WASMATIC_TOKEN", "s3cret")
        .start();
    let mut cli = Client::of(&node);
    let echo = path("echo.wasm");

    // Without the token: the node's 401, and a hint.
    let err = cli
        .run(&["register", &echo])
        .fails(EXIT_NODE_ERROR, "Authorization: Bearer");
    assert!(
        err.contains("HTTP 401") && err.contains("WASMATIC_TOKEN"),
        "{err}"
    );
    cli.token = Some("wrong".into());
    cli.run(&["register", &echo])
        .fails(EXIT_NODE_ERROR, "the bearer token is wrong");
    cli.token = Some("s3cret".into());
    cli.run(&["register", &echo]).ok();
    // Running what is registered needs no token.
    cli.token = None;
    assert_eq!(cli.run(&["run", "echo", "open"]).ok(), "open\n");

    // --node wins over $WASMATIC_NODE.
    let elsewhere = Client {
        url: format!("http://127.0.0.1:{}", free_port()),
        token: None,
    };
    let here = format!("http://{}", node.addr);
    assert!(elsewhere
        .run(&["ls", "--node", &here])
        .ok()
        .contains("echo"));

    // Nothing listening: exit 3, naming the node.
    let err = elsewhere
        .run(&["ls"])
        .fails(EXIT_UNREACHABLE, "cannot reach the node at");
    assert!(err.contains(&elsewhere.url), "{err}");
    // TLS to a node that speaks plain HTTP fails the handshake.
    let https = format!("https://{}", node.addr);
    elsewhere
        .run(&["ls", "--node", &https])
        .fails(EXIT_UNREACHABLE, "TLS handshake failed");
}
