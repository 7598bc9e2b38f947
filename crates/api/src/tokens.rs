//! Comparing a bearer token a caller sent with the one expected.

/// Whether `given` equals `expected`, comparing every byte of `expected`
/// whatever the length of `given` and wherever it first differs, so that
/// timing reveals neither how much of a guess was right nor how long the
/// token is.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    expected
        .iter()
        .enumerate()
        .fold(u8::from(given.len() != expected.len()), |acc, (i, b)| {
            acc | (given.get(i).copied().unwrap_or(0) ^ b)
        })
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_every_byte_and_the_length_are() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
