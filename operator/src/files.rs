//! The handler files in the preopened `registered` directory, through
//! `wasi:filesystem` directly: one host call writes a whole upload, where
//! `std::fs` on wasip2 would make one per 4 KiB.

use crate::wasi::filesystem::preopens::get_directories;
use crate::wasi::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
};

/// Guest path of the preopened directory that holds handler files.
const REGISTERED: &str = "registered";

pub struct Registered(Descriptor);

impl Registered {
    pub fn open() -> Result<Registered, String> {
        get_directories()
            .into_iter()
            .find(|(_, path)| path.trim_start_matches("./").trim_matches('/') == REGISTERED)
            .map(|(dir, _)| Registered(dir))
            .ok_or_else(|| format!("no directory is granted as `{REGISTERED}`"))
    }

    /// Creates (or truncates) `file` and writes `bytes` to it.
    pub fn write(&self, file: &str, bytes: &[u8]) -> Result<(), String> {
        let failed = |e: ErrorCode| format!("cannot write {REGISTERED}/{file}: {e:?}");
        let out = self
            .0
            .open_at(
                PathFlags::empty(),
                file,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .map_err(failed)?;
        let mut written = 0;
        while written < bytes.len() {
            let n = out
                .write(&bytes[written..], written as u64)
                .map_err(failed)?;
            if n == 0 {
                return Err(format!("cannot write {REGISTERED}/{file}: no progress"));
            }
            written += n as usize;
        }
        Ok(())
    }

    /// Removes `file`; whether it was there.
    pub fn remove(&self, file: &str) -> bool {
        self.0.unlink_file_at(file).is_ok()
    }
}
