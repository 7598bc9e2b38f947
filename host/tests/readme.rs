//! The README's curl examples, run as written against a real node.
//!
//! Every `curl` line (or `… | curl` pipeline) in a `sh` block of README.md
//! that ends in a comment
//! `# STATUS [TEXT]` is run, in order, with `localhost:8080` pointed at the
//! test's node; its status must be STATUS and its body must contain TEXT.
//! `$ID` is the last `"id"` a response carried. Lines without such a
//! comment (those that would reach the internet) are shown, not run.

mod support;

use std::path::Path;
use std::process::Command;

use support::NodeBuilder;

struct Example {
    command: String,
    status: u16,
    expected: String,
}

fn examples(readme: &str) -> Vec<Example> {
    let mut in_sh = false;
    let mut examples = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        // `curl …`, or a body piped into `curl` (too large for an argument).
        if !in_sh || !(line.starts_with("curl ") || line.contains("| curl ")) {
            continue;
        }
        let Some((command, comment)) = line.rsplit_once("   # ") else {
            continue;
        };
        let (status, expected) = comment.split_once(' ').unwrap_or((comment, ""));
        let Ok(status) = status.parse() else {
            continue;
        };
        examples.push(Example {
            command: command.trim().to_string(),
            status,
            expected: expected.trim().to_string(),
        });
    }
    examples
}

#[test]
fn readme_curl_examples_work_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = examples(&readme);
    assert!(
        examples.len() >= 10,
        "found only {} examples",
        examples.len()
    );
    support::component("echo.wasm"); // built, or a clear message

    let dir = tempfile::tempdir().unwrap();
    let node = NodeBuilder::new(dir.path(), &["up"])
        .env("WASMATIC_PORT", "0")
        .start();
    let here = format!("127.0.0.1:{}", node.addr.port());
    let mut id = String::new();
    for example in &examples {
        let command = example.command.replace("localhost:8080", &here);
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{command} -w '\\n%{{http_code}}'"))
            .current_dir(&root)
            .env("ID", &id)
            .output()
            .expect("run curl");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        assert_eq!(
            status.trim().parse::<u16>().ok(),
            Some(example.status),
            "{}\nanswered: {stdout}",
            example.command
        );
        assert!(
            body.contains(&example.expected),
            "{}\nexpected `{}` in: {body}",
            example.command,
            example.expected
        );
        if let Some(new_id) = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
        {
            id = new_id;
        }
    }
}
