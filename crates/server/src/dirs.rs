//! Host directories granted to the operator (`--dir`).

use std::path::PathBuf;

/// A host directory granted to the operator under a guest path.
#[derive(Clone, Debug)]
pub struct DirMapping {
    pub host: PathBuf,
    pub guest: String,
}

impl DirMapping {
    /// Parses wasmtime's `--dir` syntax, `HOST_DIR[::GUEST_DIR]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, guest) = match s.split_once("::") {
            Some((host, guest)) => (host, guest),
            None => (s, s),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{s}` is not of the form HOST_DIR[::GUEST_DIR]"));
        }
        Ok(DirMapping {
            host: PathBuf::from(host),
            guest: guest.to_string(),
        })
    }

    /// Whether this mapping makes `host` visible to the guest as `guest`,
    /// ignoring a leading `./` or `/` on the guest side.
    pub fn is_guest(&self, guest: &str) -> bool {
        normalize_guest(&self.guest) == normalize_guest(guest)
    }
}

fn normalize_guest(path: &str) -> &str {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    path.trim_end_matches('/')
}
