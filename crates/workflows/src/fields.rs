//! Reading the fields of one JSON object of a definition, with errors that
//! say where (`step `bal``, `step 3`, `trigger`) and which field.

use std::fmt;

use serde_json::{Map, Value};

use super::template;

/// Where in a definition an object sits, for error messages.
#[derive(Clone, Debug)]
pub enum Place {
    Workflow,
    Trigger,
    /// A step without a usable id, by its 1-based position.
    Position(usize),
    Step(String),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Workflow => f.write_str("workflow"),
            Place::Trigger => f.write_str("trigger"),
            Place::Position(n) => write!(f, "step {n}"),
            Place::Step(id) => write!(f, "step `{id}`"),
        }
    }
}

pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    place: Place,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>, place: Place) -> Self {
        Fields { map, place }
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn error(&self, problem: impl fmt::Display) -> String {
        format!("{}: {problem}", self.place)
    }

    /// Refuses any field not in `allowed`; `what` names the object in the
    /// message ("a `run` step").
    pub fn allow(&self, allowed: &[&str], what: &str) -> Result<(), String> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(self.error(format_args!(
                "unknown field `{unknown}` ({what} has: {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(format_args!("`{key}` must be a string"))),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, String> {
        self.str(key)?
            .ok_or_else(|| self.error(format_args!("`{key}` is missing")))
    }

    /// A non-empty string that names something the node knows (a handler, a
    /// hash, a method): fixed when the workflow is defined, so not a template.
    pub fn required_name(&self, key: &str) -> Result<&'a str, String> {
        let name = self.required_str(key)?;
        if name.trim().is_empty() {
            return Err(self.error(format_args!("`{key}` is empty")));
        }
        if template::is_template(name) {
            return Err(self.error(format_args!(
                "`{key}` is checked when the workflow is defined, so it cannot be a template"
            )));
        }
        Ok(name)
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.error(format_args!(
                    "`{key}` must be a non-negative integer, not {v}"
                ))
            }),
        }
    }

    pub fn required_u64(&self, key: &str) -> Result<u64, String> {
        self.u64(key)?
            .ok_or_else(|| self.error(format_args!("`{key}` is missing")))
    }

    /// An optional array, empty when absent.
    pub fn array(&self, key: &str) -> Result<Vec<Value>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(self.error(format_args!("`{key}` must be an array"))),
        }
    }

    /// An optional value of any JSON type, `default` when absent.
    pub fn value_or(&self, key: &str, default: Value) -> Value {
        self.map.get(key).cloned().unwrap_or(default)
    }
}
