//! A handler that turns the WebAssembly text of a core module into a checked
//! module: the text is parsed (`wat`), the binary validated with every
//! proposal the validator knows (`wasmparser`) and printed back in canonical
//! form (`wasmprinter`).
//! Its answer is JSON: `{"bytes": N, "wat": "…"}`, or `{"error": "…"}` for
//! text that does not parse or a module that does not validate.
//!
//! Two parsers, a validator and a printer make it about 2 MiB of code: the
//! benchmark registers and starts it to measure compiling code of that size,
//! where the echo handler is a few kilobytes.

wit_bindgen::generate!({
    path: "../../wit/handler",
    world: "wasmatic:handler/handler",
    generate_all,
});

use serde_json::json;
use wasmparser::{Validator, WasmFeatures};

struct WatCheck;

impl Guest for WatCheck {
    fn handler(input: String) -> String {
        let answer = match check(&input) {
            Ok((bytes, wat)) => json!({ "bytes": bytes, "wat": wat }),
            Err(error) => json!({ "error": error }),
        };
        answer.to_string()
    }
}

/// The module's size in binary and its canonical text, or why it is not a
/// valid module.
fn check(text: &str) -> Result<(usize, String), String> {
    let binary = wat::parse_str(text).map_err(|e| format!("not WebAssembly text: {e}"))?;
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(&binary)
        .map_err(|e| format!("not a valid module: {e}"))?;
    let wat = wasmprinter::print_bytes(&binary).map_err(|e| format!("cannot print: {e}"))?;
    Ok((binary.len(), wat))
}

export!(WatCheck);
