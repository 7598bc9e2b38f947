//! A Caesar cipher as a component built elsewhere might be: its exports and
//! its import use the component model's async ABI (`async: true`), it reads
//! its settings from environment variables, and it writes to an audit log
//! of its own package (`acme:cipher/audit-log`), which the node does not
//! define. It runs unchanged on a node once registered with that import
//! linked to a provider:
//!
//! ```text
//! POST /register?name=cipher&env=SHIFT_AMOUNT=5&link=acme:cipher/audit-log=auditor
//! POST /call/cipher/encr   ["Hello"]   ->  "Mjqqt"
//! ```

wit_bindgen::generate!({
    path: "wit",
    world: "acme:cipher/cipher",
    async: true,
});

use acme::cipher::audit_log;

/// The shift when `SHIFT_AMOUNT` is not set.
const DEFAULT_SHIFT: u8 = 3;

struct Cipher;

impl Guest for Cipher {
    async fn encr(input: String) -> String {
        shift_audited("encr", input, |shift| shift).await
    }

    async fn decr(input: String) -> String {
        shift_audited("decr", input, |shift| (26 - shift) % 26).await
    }
}

/// Shifts `input` by the configured amount (turned by `direction`), with a
/// record before and after.
async fn shift_audited(action: &str, input: String, direction: fn(u8) -> u8) -> String {
    let shift = match configured_shift() {
        Ok(shift) => shift,
        Err(bad) => {
            audit_log::auditrecord(action.to_string(), format!("refused: {bad}")).await;
            panic!("{bad}");
        }
    };
    audit_log::auditrecord(
        action.to_string(),
        format!("{} characters, shift {shift}", input.chars().count()),
    )
    .await;
    let output = rotate(&input, direction(shift));
    audit_log::auditrecord(action.to_string(), format!("done: {} bytes", output.len())).await;
    output
}

/// `SHIFT_AMOUNT`, read at each call (the node sets it from `env=` at
/// registration). A bad value fails the call rather than guessing.
fn configured_shift() -> Result<u8, String> {
    match std::env::var("SHIFT_AMOUNT") {
        Err(_) => Ok(DEFAULT_SHIFT),
        Ok(raw) => match raw.trim().parse::<u8>() {
            Ok(n) if n < 26 => Ok(n),
            _ => Err(format!("SHIFT_AMOUNT={raw:?} is not a number from 0 to 25")),
        },
    }
}

/// Shifts ASCII letters by `shift` places, keeping case; leaves the rest.
fn rotate(text: &str, shift: u8) -> String {
    text.chars()
        .map(|c| {
            let base = match c {
                'a'..='z' => b'a',
                'A'..='Z' => b'A',
                _ => return c,
            };
            (base + (c as u8 - base + shift) % 26) as char
        })
        .collect()
}

export!(Cipher);
