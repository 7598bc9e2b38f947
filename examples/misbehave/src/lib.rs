//! A handler that misbehaves on request, so that the node's tests can show
//! that no handler takes the node down. Its input picks the fault:
//!
//! | input       | what it does                                    |
//! |-------------|-------------------------------------------------|
//! | `trap`      | executes `unreachable`                          |
//! | `loop`      | spins forever                                   |
//! | `grow`      | allocates memory without end                    |
//! | `recurse`   | recurses without end                            |
//! | `print`     | writes 4 MiB to stdout and to stderr, returns   |
//! | `sleep`     | sleeps for a minute                             |
//! | `nap`       | sleeps for two seconds, returns `napped`        |
//! | `big`       | returns 2 MiB                                   |
//! | `env`       | returns every environment variable it sees      |
//! | `files`     | lists what it can see of a filesystem           |
//! | `count`     | returns how many calls this instance has served |
//! | `tick`      | returns `WASMATIC_SCHEDULED_FOR` from its configuration and from its environment |
//! | `fields`    | hoards `wasi:http` fields resources of 24 KiB each, without end |
//! | anything else | returns `ok: INPUT`                           |

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls this instance has served: state that only a reused instance keeps.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Misbehave;

impl Guest for Misbehave {
    fn handler(input: String) -> String {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match input.as_str() {
            "count" => calls.to_string(),
            "tick" => format!(
                "config {:?}, env {:?}",
                wasmatic::guest::config::get("WASMATIC_SCHEDULED_FOR"),
                std::env::var("WASMATIC_SCHEDULED_FOR").ok()
            ),
            "trap" => core::arch::wasm32::unreachable(),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => format!("{}", recurse(black_box(1))),
            "print" => {
                let line = "x".repeat(1023) + "\n";
                for _ in 0..4096 {
                    print!("{line}");
                    eprint!("{line}");
                }
                "printed".into()
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(60));
                "woke".into()
            }
            "nap" => {
                std::thread::sleep(std::time::Duration::from_secs(2));
                "napped".into()
            }
            "big" => "y".repeat(2 << 20),
            "fields" => {
                use wasi::http::types::Fields;
                let value = vec![b'v'; 1024];
                let mut hoard = Vec::new();
                loop {
                    let fields = Fields::new();
                    // Each append grows the resource on the host's side.
                    for i in 0..24 {
                        let _ = fields.append(&format!("x-{i}"), &value);
                    }
                    hoard.push(black_box(fields));
                }
            }
            "env" => std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect(),
            "files" => ["/", ".", "registered", "/etc"]
                .iter()
                .map(|path| format!("{path}: {}\n", std::fs::read_dir(path).is_ok()))
                .collect(),
            other => format!("ok: {other}"),
        }
    }
}

/// Small frames, so that the wasm call stack overflows before Rust's own
/// stack in linear memory does.
fn recurse(n: u64) -> u64 {
    // Never true; it only tells the compiler that recursion can end.
    if n == u64::MAX {
        return 0;
    }
    // `black_box` around the result keeps the call from becoming a loop.
    black_box(recurse(black_box(n + 1))) ^ n
}

export!(Misbehave);
