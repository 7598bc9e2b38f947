//! A handler whose export uses the component model's async ABI: the world
//! `async-handler` declares `handler: async func`, so wit-bindgen lifts it
//! async (its imports stay synchronous, as their WIT declares them; an
//! `async: true` that forced them async would make an invalid component).
//! The node runs it as any handler. Its input picks what it does,
//! so that the tests can show the node's limits hold for async guests too:
//!
//! | input   | what it does                                     |
//! |---------|--------------------------------------------------|
//! | `count` | how many calls this instance has served          |
//! | `yield` | yields to the host 100 times, then answers       |
//! | `loop`  | spins forever                                    |
//! | `grow`  | allocates memory without end                     |
//! | `trap`  | panics                                           |
//! | else    | `async: INPUT`, after an audit entry             |

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/async-handler",
    generate_all,
});

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmatic::guest::audit;

/// Calls this instance has served: state only a reused instance keeps.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct AsyncEcho;

impl Guest for AsyncEcho {
    async fn handler(input: String) -> String {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        match input.as_str() {
            "count" => calls.to_string(),
            "yield" => {
                for _ in 0..100 {
                    wit_bindgen::yield_async().await;
                }
                "yielded 100 times".to_string()
            }
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
            "trap" => panic!("async-echo: asked to trap"),
            _ => {
                audit::log(audit::Level::Info, &format!("async-echo: {input}"));
                format!("async: {input}")
            }
        }
    }
}

export!(AsyncEcho);
