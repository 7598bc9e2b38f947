//! What a registered name may be: the name of a component, a core module,
//! a workflow. The operator checks it so that nothing is written for a bad
//! name; the host checks again, as it trusts no operator.

/// The rule [`is_valid_name`] checks, as error messages state it.
pub const NAME_RULE: &str = "use 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit";

/// Whether `name` is a valid name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_words() {
        assert!(is_valid_name("echo"));
        assert!(is_valid_name("0-a_b"));
        assert!(is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(&"a".repeat(65)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name("_a"));
        assert!(!is_valid_name("Echo"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name("a.wasm"));
        for ok in ["a", "gecko-2", "0x"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["A", "..", "../x", "a.b", "a\0", "é"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
