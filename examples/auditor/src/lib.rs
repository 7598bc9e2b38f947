//! A provider of `acme:cipher/audit-log` for components that bring that
//! import (see `examples/cipher`): each record goes to the node's audit log
//! (`wasmatic:guest/audit`). A component linked to it calls it within its
//! own call, so the records land in the caller's run:
//!
//! ```text
//! POST /register?name=auditor                                   (this component)
//! POST /register?name=cipher&link=acme:cipher/audit-log=auditor (the guest)
//! ```

wit_bindgen::generate!({
    path: "../cipher/wit",
    world: "acme:cipher/auditor",
    generate_all,
});

use exports::acme::cipher::audit_log;
use wasmatic::guest::audit;

struct Auditor;

impl audit_log::Guest for Auditor {
    async fn auditrecord(action: String, detail: String) {
        audit::log(audit::Level::Info, &format!("{action}: {detail}"));
    }
}

export!(Auditor);
