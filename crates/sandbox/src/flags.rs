//! Which of wasmtime's `-D`, `-W` and `-S` flags the node honours, and what
//! they set for every guest store.
//!
//! The node accepts wasmtime's own flags so that an operator can tune it the
//! way they tune `wasmtime serve`. A flag that is accepted but ignored is a
//! lie about the node's limits (`-W max-memory-size` that bounds nothing), so
//! [`check`] refuses at start every flag it does not know the node to honour,
//! naming it. Flags are found by serializing the parsed option groups: their
//! keys are the kebab-case flag names, so a flag wasmtime adds in a later
//! release is refused until it is listed here.
//!
//! Two kinds are honoured: those `CommonOptions::config` applies to the
//! engine's `Config` (wasmtime enforces them itself), and the per-store
//! limits below, which the node applies to every store it creates
//! (`limits::GuestLimiter`, `engine::with_deadline`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wasmtime_cli_flags::CommonOptions;

/// Resource-table entries (open streams, fields, requests…) one guest store
/// may hold at once unless `-S max-resources` says otherwise: enough for any
/// honest handler, few enough that a loop creating them cannot take the
/// node's memory.
pub const DEFAULT_MAX_RESOURCES: usize = 1_000;

/// Bytes of one `wasi:http` `fields` resource (headers, trailers) unless
/// `-S max-http-fields-size` says otherwise. wasmtime's default, 128 KiB,
/// times [`DEFAULT_MAX_RESOURCES`] is more than a node should give one call.
pub const DEFAULT_MAX_HTTP_FIELDS_SIZE: usize = 32 * 1024;

/// Instances, tables and memories one store may create unless `-W
/// max-instances/max-tables/max-memories` say otherwise. A component counts
/// each of its core instances; a core module call counts each linked module.
pub const DEFAULT_MAX_INSTANCES: usize = 256;
pub const DEFAULT_MAX_TABLES: usize = 128;
pub const DEFAULT_MAX_MEMORIES: usize = 128;

/// Table elements summed over every table of a store, whatever the flags: a
/// table element is a pointer or more of host memory.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The per-store limits wasmtime's flags set; the rest of a node's limits are
/// its own flags (`limits::Limits`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RuntimeFlags {
    /// `-W fuel=N`: fuel each guest call, and each operator request, starts
    /// with.
    pub fuel: Option<u64>,
    /// `-W timeout`: the longest any guest call may take (the lower of it and
    /// the node's own timeout for that kind of call).
    pub timeout: Option<Duration>,
    /// `-W max-memory-size`: bytes one linear memory may grow to.
    pub max_memory_size: Option<usize>,
    /// `-W max-table-elements`: elements one table may grow to.
    pub max_table_elements: Option<usize>,
    /// `-W max-instances`, `-W max-tables`, `-W max-memories`: per store.
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
    /// `-W trap-on-grow-failure`: a refused `memory.grow` or `table.grow`
    /// traps instead of returning -1.
    pub trap_on_grow_failure: bool,
    /// `-S max-resources`: resource-table entries per guest store.
    pub max_resources: usize,
    /// `-S max-http-fields-size`: bytes of one `wasi:http` fields resource.
    pub max_http_fields_size: usize,
}

impl Default for RuntimeFlags {
    fn default() -> Self {
        RuntimeFlags {
            fuel: None,
            timeout: None,
            max_memory_size: None,
            max_table_elements: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_tables: DEFAULT_MAX_TABLES,
            max_memories: DEFAULT_MAX_MEMORIES,
            trap_on_grow_failure: false,
            max_resources: DEFAULT_MAX_RESOURCES,
            max_http_fields_size: DEFAULT_MAX_HTTP_FIELDS_SIZE,
        }
    }
}

impl RuntimeFlags {
    /// A guest call's time limit: `node_limit`, or `-W timeout` if lower.
    pub fn guest_timeout(&self, node_limit: Duration) -> Duration {
        self.timeout.map_or(node_limit, |t| t.min(node_limit))
    }

    /// A guest store's resource table (streams, `wasi:http` fields and
    /// requests…), holding at most `-S max-resources` entries: a guest looping
    /// on resource creation gets a trap, not the host's memory.
    pub fn resource_table(&self) -> wasmtime::component::ResourceTable {
        let mut table = wasmtime::component::ResourceTable::new();
        table.set_max_capacity(self.max_resources);
        table
    }

    /// A guest store's `wasi:http` context: fields (headers, trailers) of at
    /// most `-S max-http-fields-size` bytes each.
    pub fn http_ctx(&self) -> wasmtime_wasi_http::WasiHttpCtx {
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(self.max_http_fields_size);
        http
    }
}

/// `-D` flags `CommonOptions::config` applies to the engine.
const DEBUG_BY_WASMTIME: &[&str] = &[
    "debug-info",
    "guest-debug",
    "address-map",
    "max-backtrace",
    "symbols",
];

/// `-W` flags `CommonOptions::config` applies to the engine.
const WASM_BY_WASMTIME: &[&str] = &[
    "nan-canonicalization",
    "max-wasm-stack",
    "async-stack-size",
    "async-stack-zeroing",
    "wmemcheck",
    "relaxed-simd-deterministic",
    "gc-support",
    "concurrency-support",
    "shared-memory",
    "all-proposals",
    "simd",
    "relaxed-simd",
    "bulk-memory",
    "multi-value",
    "tail-call",
    "multi-memory",
    "memory64",
    "stack-switching",
    "custom-page-sizes",
    "wide-arithmetic",
    "branch-hinting",
    "extended-const",
    "component-model-async",
    "component-model-more-async-builtins",
    "component-model-async-stackful",
    "component-model-threading",
    "component-model-error-context",
    "component-model-map",
    "component-model-fixed-length-lists",
    "component-model-implements",
    "component-model-memory64",
    "component-model-gc",
    "threads",
    "gc",
    "reference-types",
    "function-references",
    "exceptions",
];

/// `-W` flags the node applies to its stores.
const WASM_BY_NODE: &[&str] = &[
    "fuel",
    "timeout",
    "max-memory-size",
    "max-table-elements",
    "max-instances",
    "max-tables",
    "max-memories",
    "trap-on-grow-failure",
];

/// `-W` flags whose only honoured value is the one the node needs anyway.
const WASM_MUST_BE_ON: &[&str] = &["epoch-interruption", "component-model"];

/// `-S` flags the node applies (`cli`, `common` and `http` in `main.rs`).
const WASI_BY_NODE: &[&str] = &[
    "cli",
    "common",
    "http",
    "max-resources",
    "max-http-fields-size",
];

/// Refuses every `-D`, `-W` or `-S` flag the node would not honour, naming
/// it, and returns what the honoured ones set. Call it after the engine is
/// built: wasmtime parses the raw flags into their groups then.
pub fn check(options: &CommonOptions) -> Result<RuntimeFlags> {
    let mut refused = Vec::new();
    for (letter, group, allowed) in [
        ('D', group(&options.debug)?, vec![DEBUG_BY_WASMTIME]),
        (
            'W',
            group(&options.wasm)?,
            vec![WASM_BY_WASMTIME, WASM_BY_NODE],
        ),
        ('S', group(&options.wasi)?, vec![WASI_BY_NODE]),
    ] {
        for (name, value) in group {
            let honoured = allowed.iter().any(|list| list.contains(&name.as_str()))
                || (letter == 'W'
                    && WASM_MUST_BE_ON.contains(&name.as_str())
                    && value == Value::Bool(true));
            if !honoured {
                refused.push(format!("-{letter} {name}"));
            }
        }
    }
    if !refused.is_empty() {
        bail!(
            "{} not supported by wasmatic (the node would ignore {}); remove {}",
            refused.join(", "),
            if refused.len() == 1 { "it" } else { "them" },
            if refused.len() == 1 { "it" } else { "them" },
        );
    }
    let (wasm, wasi) = (&options.wasm, &options.wasi);
    if wasm.fuel == Some(0) {
        bail!("-W fuel=0 would stop every request at its first instruction");
    }
    Ok(RuntimeFlags {
        fuel: wasm.fuel,
        timeout: wasm.timeout,
        max_memory_size: wasm.max_memory_size,
        max_table_elements: wasm.max_table_elements,
        max_instances: wasm.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES),
        max_tables: wasm.max_tables.unwrap_or(DEFAULT_MAX_TABLES),
        max_memories: wasm.max_memories.unwrap_or(DEFAULT_MAX_MEMORIES),
        trap_on_grow_failure: wasm.trap_on_grow_failure.unwrap_or(false),
        max_resources: wasi.max_resources.unwrap_or(DEFAULT_MAX_RESOURCES),
        max_http_fields_size: wasi
            .max_http_fields_size
            .unwrap_or(DEFAULT_MAX_HTTP_FIELDS_SIZE),
    })
}

/// The flags set in one option group, by name: serialized, an unset flag is
/// `null` (or an empty list, for the repeatable ones).
fn group<T: serde::Serialize>(options: &T) -> Result<Vec<(String, Value)>> {
    let value = serde_json::to_value(options).context("cannot read wasmtime's flags")?;
    let Value::Object(map) = value else {
        bail!("cannot read wasmtime's flags: not a map");
    };
    Ok(map
        .into_iter()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    /// The options as `wasmatic up` would parse them, configured the way
    /// the engine's construction configures them.
    pub(crate) fn parse(args: &[&str]) -> CommonOptions {
        #[derive(Parser)]
        struct Args {
            #[command(flatten)]
            wasmtime: CommonOptions,
        }
        let mut args = Args::parse_from(std::iter::once("wasmatic").chain(args.iter().copied()));
        args.wasmtime.config(Some(false)).expect("valid flags");
        args.wasmtime
    }

    #[test]
    fn honoured_flags_set_the_store_limits() {
        let flags = check(&parse(&[
            "-W",
            "fuel=1000,timeout=2s,max-memory-size=1048576,max-instances=7",
            "-S",
            "max-resources=50,max-http-fields-size=4096,http=y",
            "-W",
            "simd=y,epoch-interruption=y",
        ]))
        .expect("honoured");
        assert_eq!(flags.fuel, Some(1000));
        assert_eq!(flags.timeout, Some(Duration::from_secs(2)));
        assert_eq!(flags.max_memory_size, Some(1 << 20));
        assert_eq!(flags.max_instances, 7);
        assert_eq!(flags.max_tables, DEFAULT_MAX_TABLES);
        assert_eq!(flags.max_resources, 50);
        assert_eq!(flags.max_http_fields_size, 4096);
        assert_eq!(check(&parse(&[])).expect("none"), RuntimeFlags::default());
    }

    #[test]
    fn ignored_flags_are_refused_by_name() {
        for (args, named) in [
            (&["-S", "config"][..], "-S config"),
            (&["-S", "tcp=y"][..], "-S tcp"),
            (
                &["-W", "unknown-imports-trap"][..],
                "-W unknown-imports-trap",
            ),
            (&["-W", "epoch-interruption=n"][..], "-W epoch-interruption"),
            (&["-D", "logging"][..], "-D logging"),
        ] {
            let e = check(&parse(args)).expect_err("refused").to_string();
            assert!(e.contains(named), "{args:?}: {e}");
        }
        let e = check(&parse(&["-S", "config,keyvalue"]))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("-S config, -S keyvalue"), "{e}");
    }

    #[test]
    fn guest_timeouts_take_the_lower_limit() {
        let flags = RuntimeFlags {
            timeout: Some(Duration::from_secs(1)),
            ..RuntimeFlags::default()
        };
        assert_eq!(
            flags.guest_timeout(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            RuntimeFlags::default().guest_timeout(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
