//! A Caesar-cipher service: `encrypt` and `decrypt` shift ASCII letters by
//! the `SHIFT_AMOUNT` its node runner configured at registration
//! (`/register?name=caesar&env=SHIFT_AMOUNT=5`), and each call leaves an
//! entry in the node's audit log.

wit_bindgen::generate!({
    path: "wit",
    world: "example:caesar/caesar",
    generate_all,
});

use wasmatic::guest::{audit, config};

/// The shift when none is configured.
const DEFAULT_SHIFT: u8 = 3;

struct Caesar;

impl Guest for Caesar {
    fn encrypt(text: String) -> String {
        rotate(&text, audited_shift("encrypt", &text))
    }

    fn decrypt(text: String) -> String {
        rotate(&text, 26 - audited_shift("decrypt", &text))
    }
}

/// The configured shift, after writing the call to the audit log.
fn audited_shift(operation: &str, text: &str) -> u8 {
    let shift = shift();
    audit::log(
        audit::Level::Info,
        &format!(
            "{operation}: {} characters, shift {shift}",
            text.chars().count()
        ),
    );
    shift
}

/// The configured shift. A bad value is the node runner's mistake: the call
/// fails with a message saying so rather than encrypting with a guess.
fn shift() -> u8 {
    match config::get("SHIFT_AMOUNT") {
        None => DEFAULT_SHIFT,
        Some(raw) => match raw.trim().parse::<u8>() {
            Ok(n) if n < 26 => n,
            _ => {
                audit::log(
                    audit::Level::Error,
                    &format!("SHIFT_AMOUNT={raw:?} is not a number from 0 to 25"),
                );
                panic!("SHIFT_AMOUNT={raw:?} is not a number from 0 to 25");
            }
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
            char::from((c as u8 - base + shift) % 26 + base)
        })
        .collect()
}

export!(Caesar);
