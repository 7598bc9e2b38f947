//! The contract only grows: an operator built against an earlier 0.4
//! release of `wasmatic:operator`, importing only what it uses, still links
//! with this host. The operators here are components written out as text,
//! each importing a few functions of the contract as 0.4.0 declared them.

use wasmatic_sandbox::engine::{self, Concurrency};
use wasmtime::component::Component;
use wasmtime_cli_flags::CommonOptions;

/// A component importing `handlers` at `version` with `functions` (WAT
/// function types using `$err` for the contract's error), and the `types`
/// interface its error comes from.
fn operator(version: &str, functions: &str) -> String {
    format!(
        r#"(component $C
  (type $error (variant
    (case "not-found" string) (case "invalid" string) (case "conflict" string)
    (case "too-large" string) (case "failed" string) (case "timed-out" string)
    (case "busy" string) (case "internal" string)))
  (import "wasmatic:operator/types@{version}" (instance $types
    (export "error" (type (eq $error)))))
  (alias export $types "error" (type $types-error))
  (import "wasmatic:operator/handlers@{version}" (instance
    (alias outer $C $types-error (type $e))
    (export "error" (type $err (eq $e)))
    {functions}))
)"#
    )
}

/// `remove` and `invoke` as contract 0.4.0 declared them.
const FROM_0_4_0: &str = r#"
    (export "remove" (func (param "name" string) (result (result (error $err)))))
    (export "invoke" (func (param "name" string) (param "input" string)
      (result (result string (error $err)))))"#;

fn links(wat: &str) -> Result<(), String> {
    let engine =
        engine::build(&mut CommonOptions::new(), Concurrency::Off).map_err(|e| format!("{e:#}"))?;
    let component = Component::new(&engine, wat).map_err(|e| format!("{e:#}"))?;
    let linker = wasmatic_server::contract::linker(&engine, true).map_err(|e| format!("{e:#}"))?;
    linker
        .instantiate_pre(&component)
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn an_operator_built_against_0_4_0_still_links() {
    links(&operator("0.4.0", FROM_0_4_0)).expect("0.4.0 imports link");
}

#[test]
fn what_the_contract_never_had_does_not_link() {
    // The same imports under another major version, a function the
    // contract has no such name for, and a changed signature: each
    // refused, so the test above does show compatibility.
    let refused = |wat: String, what: &str| {
        let e = links(&wat).expect_err(what);
        assert!(
            e.contains("a matching implementation was not found in the linker"),
            "{what}: {e}"
        );
    };
    refused(operator("1.0.0", FROM_0_4_0), "another major version");
    let unknown = r#"(export "frobnicate" (func (param "name" string)))"#;
    refused(
        operator("0.4.0", unknown),
        "a function the contract never had",
    );
    let changed = r#"(export "remove" (func (param "name" u32) (result (result (error $err)))))"#;
    refused(operator("0.4.0", changed), "a changed signature");
}
