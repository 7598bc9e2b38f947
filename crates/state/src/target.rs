//! What a schedule or a chain trigger runs: a handler, or a workflow.
//!
//! Both are kept under one name in the state, as they have always been: a
//! handler's name as it is, a workflow's as `workflow:NAME` (no handler
//! name has a colon). This is the one place that reads and writes that
//! form; everywhere else a [`Target`] says which it is.

/// How a workflow's timer and trigger are named in the state.
const WORKFLOW_PREFIX: &str = "workflow:";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Handler(&'a str),
    Workflow(&'a str),
}

impl<'a> Target<'a> {
    /// The target named `stored`, as the state keeps it.
    pub fn of(stored: &'a str) -> Self {
        match stored.strip_prefix(WORKFLOW_PREFIX) {
            Some(workflow) => Target::Workflow(workflow),
            None => Target::Handler(stored),
        }
    }

    /// The name the state keeps this target under (and a workflow's timer
    /// is known by in the scheduler).
    pub fn stored(self) -> String {
        match self {
            Target::Handler(name) => name.to_string(),
            Target::Workflow(name) => format!("{WORKFLOW_PREFIX}{name}"),
        }
    }

    /// The workflow's name, when the target is one.
    pub fn workflow(self) -> Option<&'a str> {
        match self {
            Target::Workflow(name) => Some(name),
            Target::Handler(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_is_told_from_a_handler_and_round_trips() {
        assert_eq!(Target::of("echo"), Target::Handler("echo"));
        assert_eq!(Target::of("workflow:daily"), Target::Workflow("daily"));
        assert_eq!(Target::Workflow("daily").stored(), "workflow:daily");
        assert_eq!(Target::Handler("echo").stored(), "echo");
        assert_eq!(Target::of("workflow:daily").workflow(), Some("daily"));
        assert_eq!(Target::of("echo").workflow(), None);
    }
}
