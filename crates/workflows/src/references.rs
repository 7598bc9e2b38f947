//! What a template in a definition may read: `trigger`, `workflow.name`,
//! `run.id`, and the steps that have run before the one it belongs to (any
//! step, for the workflow's `result`). Checked statically, from the variable
//! paths the engine finds in each template, so that a typo or a reference to
//! a later step is refused at `POST` rather than failing a run.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::template;

/// Which steps a template may read.
pub enum Visible<'a> {
    /// A step's templates: the steps before it; `all` tells a later step
    /// from none.
    Before {
        earlier: &'a [&'a str],
        all: &'a HashSet<&'a str>,
    },
    /// The workflow's `result`: every step.
    All(&'a [&'a str]),
}

impl Visible<'_> {
    pub fn earlier(&self) -> &[&str] {
        match self {
            Visible::Before { earlier, .. } => earlier,
            Visible::All(all) => all,
        }
    }
}

/// Checks every string in `value` that is a template; `secrets` tells
/// whether it may read `secrets.NAME`.
pub fn check_templates(value: &Value, scope: &Visible<'_>, secrets: bool) -> Result<(), String> {
    match value {
        Value::String(s) if template::is_template(s) => check_template(s, false, scope, secrets),
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_templates(v, scope, secrets)),
        Value::Object(map) => map
            .values()
            .try_for_each(|v| check_templates(v, scope, secrets)),
        _ => Ok(()),
    }
}

/// Checks that `source` parses (as a condition when `condition`) and reads
/// only what exists when it is rendered.
pub fn check_template(
    source: &str,
    condition: bool,
    scope: &Visible<'_>,
    secrets: bool,
) -> Result<(), String> {
    let refs: BTreeSet<String> = if condition {
        template::condition_references(source)?
    } else {
        template::references(source)?
    };
    refs.iter()
        .try_for_each(|path| check_reference(path, scope, secrets))
}

/// The secrets the templates of `value` read, by name.
pub fn secret_names(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(s) if template::is_template(s) => {
            for path in template::references(s).unwrap_or_default() {
                if let Some(name) = path.strip_prefix("secrets.") {
                    found.insert(name.split('.').next().unwrap_or(name).to_string());
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| secret_names(v, found)),
        Value::Object(map) => map.values().for_each(|v| secret_names(v, found)),
        _ => {}
    }
}

fn check_reference(path: &str, scope: &Visible<'_>, secrets: bool) -> Result<(), String> {
    let mut parts = path.split('.');
    let root = parts.next().unwrap_or(path);
    let field = parts.next();
    match root {
        "trigger" => Ok(()),
        "secrets" if !secrets => Err(
            "`secrets` may be read only in an `http` step's `url`, `headers` and `body`, so that a secret leaves the node only in the request it is for"
                .into(),
        ),
        "secrets" => match field {
            None => Err("`secrets` must be followed by a secret's name, as in `secrets.NAME`".into()),
            Some(_) => Ok(()),
        },
        "workflow" | "run" => {
            let has = if root == "workflow" { "name" } else { "id" };
            match field {
                Some(f) if f != has => Err(format!(
                    "`{root}.{f}` does not exist (`{root}` has only `{root}.{has}`)"
                )),
                _ => Ok(()),
            }
        }
        "steps" => match (field, scope) {
            (None, Visible::All(_)) => Ok(()),
            (None, Visible::Before { .. }) => Err(
                "`steps` must be followed by a step id, as in `steps.ID.output`, \
                 so that the reference can be checked"
                    .into(),
            ),
            (Some(id), _) if scope.earlier().contains(&id) => Ok(()),
            (Some(id), Visible::Before { all, .. }) if all.contains(id) => Err(format!(
                "`steps.{id}` refers to a step that has not run yet"
            )),
            (Some(id), _) => Err(format!("`steps.{id}` refers to no step of this workflow")),
        },
        other => Err(format!(
            "`{other}` is not defined (templates read {})",
            template::ROOTS.join(", ")
        )),
    }
}
