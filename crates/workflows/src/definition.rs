//! Workflow definitions: the JSON a client posts to `/workflows`, parsed and
//! checked once, at `POST`, so that a run never meets a typo.
//!
//! Parsing is by hand over `serde_json::Value` rather than a derived
//! `Deserialize`: which fields a step may have depends on its `type`, and
//! every refusal must name the step and the field in one line.
//!
//! What is checked here: the shape (required and unknown fields, types,
//! limits), every template (it parses, and reads only `trigger`, `workflow`,
//! `run` and the steps that have run before it), and through [`Known`]
//! everything the node knows (handlers, components, jobs, chains, cron lines,
//! chain events, JSON-RPC methods).

use std::collections::HashSet;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::fields::{Fields, Place};
use super::references::{check_template, check_templates, Visible};
use super::template;
use wasmatic_api::is_valid_name;

/// The most steps a workflow may have.
pub const MAX_STEPS: usize = 64;
/// The most retries a step may ask for.
pub const MAX_RETRIES: u32 = 5;
/// The longest timeout a step may ask for, in milliseconds.
pub const MAX_STEP_TIMEOUT_MS: u64 = 30_000;

/// A checked workflow. It serializes back to the JSON it was parsed from
/// (defaults filled in), which is what `GET /workflows/NAME` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workflow {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<WorkflowTrigger>,
    pub steps: Vec<Step>,
    /// A template over all steps; without it the result is the last step's
    /// output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

/// What starts a run besides `POST /workflows/NAME/run`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowTrigger {
    /// `{"cron": "*/5 * * * * *"}`, as for schedules.
    Cron(String),
    /// `{"chain": {"chain_id", "on", "confirmations"}}`, as for `/triggers`.
    Chain {
        chain_id: u64,
        on: Value,
        confirmations: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
    /// A condition template; false skips the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(rename = "timeout", skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
}

/// What a step does. Names and hashes are fixed at definition time (they are
/// checked against the node); only the values (`input`, `args`, `params`,
/// `url`, header values, `body`) are templates.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    Run {
        handler: String,
        input: Value,
    },
    Call {
        component: String,
        function: String,
        args: Vec<Value>,
    },
    Job {
        #[serde(rename = "wasmHash")]
        wasm_hash: String,
        input: Value,
    },
    WasmValidation {
        #[serde(rename = "wasmHash")]
        wasm_hash: String,
        input: Value,
    },
    Http {
        method: String,
        url: String,
        #[serde(
            serialize_with = "headers_object",
            skip_serializing_if = "Vec::is_empty"
        )]
        headers: Vec<(String, String)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
    },
    Eth {
        chain_id: u64,
        method: String,
        params: Vec<Value>,
    },
}

/// The step types, as `type` names them.
pub const STEP_TYPES: [&str; 6] = ["run", "call", "job", "wasm_validation", "http", "eth"];

/// The HTTP methods an `http` step may use.
pub const HTTP_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// Fields every step may have, whatever its type.
const COMMON_FIELDS: [&str; 5] = ["id", "type", "when", "timeout", "retries"];

impl StepKind {
    /// The templated values of a step, by field name.
    pub fn template_fields(&self) -> Vec<(&'static str, Value)> {
        match self {
            StepKind::Run { input, .. }
            | StepKind::Job { input, .. }
            | StepKind::WasmValidation { input, .. } => vec![("input", input.clone())],
            StepKind::Call { args, .. } => vec![("args", Value::Array(args.clone()))],
            StepKind::Eth { params, .. } => vec![("params", Value::Array(params.clone()))],
            StepKind::Http {
                url, headers, body, ..
            } => {
                let mut fields = vec![("url", Value::String(url.clone()))];
                fields.push((
                    "headers",
                    Value::Array(
                        headers
                            .iter()
                            .map(|(_, v)| Value::String(v.clone()))
                            .collect(),
                    ),
                ));
                if let Some(body) = body {
                    fields.push(("body", body.clone()));
                }
                fields
            }
        }
    }

    /// The `type` of the step in a definition.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Run { .. } => "run",
            StepKind::Call { .. } => "call",
            StepKind::Job { .. } => "job",
            StepKind::WasmValidation { .. } => "wasm_validation",
            StepKind::Http { .. } => "http",
            StepKind::Eth { .. } => "eth",
        }
    }

    /// The fields a step of `type_name` has besides [`COMMON_FIELDS`].
    fn fields(type_name: &str) -> &'static [&'static str] {
        match type_name {
            "run" => &["handler", "input"],
            "call" => &["component", "function", "args"],
            "job" | "wasm_validation" => &["wasmHash", "input"],
            "http" => &["method", "url", "headers", "body"],
            "eth" => &["chain_id", "method", "params"],
            _ => &[],
        }
    }
}

/// What the node knows, for validation at `POST` time. Each method answers
/// `Err` with a message that says what is wrong (the caller names the step).
pub trait Known {
    /// A registered handler (of the handler world).
    fn handler(&self, name: &str) -> Result<(), String>;
    /// An export of a registered component, or a function of a core module.
    fn callable(&self, name: &str, function: &str) -> Result<(), String>;
    /// A job the node has run or stored (`wasm_hash` is 64 lower-case hex).
    fn job(&self, wasm_hash: &str) -> Result<(), String>;
    /// A configured chain.
    fn chain(&self, chain_id: u64) -> Result<(), String>;
    /// A cron line the scheduler accepts.
    fn cron(&self, line: &str) -> Result<(), String>;
    /// The `on` of a chain trigger, as `/triggers` accepts it.
    fn chain_event(&self, on: &Value) -> Result<(), String>;
    /// A JSON-RPC method on the read-only allow list.
    fn eth_method(&self, method: &str) -> Result<(), String>;
}

/// Parses and validates a definition. The error is one line naming the step
/// (by id, or by position when it has none) and the problem.
pub fn parse(json: &[u8], known: &impl Known) -> Result<Workflow, String> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("workflow: not JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err("workflow: a workflow is a JSON object".into());
    };
    let top = Fields::new(map, Place::Workflow);
    top.allow(&["name", "trigger", "steps", "result"], "a workflow")?;

    let name = top.required_str("name")?;
    if !is_valid_name(name) {
        return Err(format!(
            "workflow: `name` must match [a-z0-9][a-z0-9_-]{{0,63}}, not {name:?}"
        ));
    }
    let trigger = match map.get("trigger") {
        None | Some(Value::Null) => None,
        Some(trigger) => Some(parse_trigger(trigger, known)?),
    };
    let raw_steps = match map.get("steps") {
        Some(Value::Array(steps)) => steps,
        Some(_) => return Err("workflow: `steps` must be an array".into()),
        None => return Err("workflow: `steps` is missing".into()),
    };
    if raw_steps.is_empty() || raw_steps.len() > MAX_STEPS {
        return Err(format!(
            "workflow: a workflow has 1 to {MAX_STEPS} steps, not {}",
            raw_steps.len()
        ));
    }

    // Every id in the definition, to tell a reference to a later step from a
    // reference to no step at all.
    let all_ids: HashSet<&str> = raw_steps
        .iter()
        .filter_map(|s| s.get("id").and_then(Value::as_str))
        .collect();
    let mut steps: Vec<Step> = Vec::with_capacity(raw_steps.len());
    for (index, raw) in raw_steps.iter().enumerate() {
        let earlier: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        let scope = Visible::Before {
            earlier: &earlier,
            all: &all_ids,
        };
        let step = parse_step(index, raw, &scope, known)?;
        steps.push(step);
    }

    let result = match map.get("result") {
        None | Some(Value::Null) => None,
        Some(Value::String(result)) => {
            let all: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
            check_template(result, false, &Visible::All(&all), false)
                .map_err(|e| format!("workflow: `result`: {e}"))?;
            Some(result.clone())
        }
        Some(_) => return Err("workflow: `result` must be a template string".into()),
    };

    Ok(Workflow {
        name: name.to_owned(),
        trigger,
        steps,
        result,
    })
}

fn parse_trigger(trigger: &Value, known: &impl Known) -> Result<WorkflowTrigger, String> {
    let Value::Object(map) = trigger else {
        return Err(r#"trigger: a trigger is {"cron": …} or {"chain": {…}}"#.into());
    };
    let fields = Fields::new(map, Place::Trigger);
    fields.allow(&["cron", "chain"], "a trigger")?;
    match (map.get("cron"), map.get("chain")) {
        (Some(_), Some(_)) => Err("trigger: give `cron` or `chain`, not both".into()),
        (Some(_), None) => {
            let line = fields.required_name("cron")?;
            known.cron(line).map_err(|e| format!("trigger: {e}"))?;
            Ok(WorkflowTrigger::Cron(line.to_owned()))
        }
        (None, Some(Value::Object(chain))) => {
            let fields = Fields::new(chain, Place::Trigger);
            fields.allow(&["chain_id", "on", "confirmations"], "a chain trigger")?;
            let chain_id = fields.required_u64("chain_id")?;
            let on = chain.get("on").ok_or("trigger: `on` is missing")?.clone();
            let confirmations = match fields.u64("confirmations")? {
                None => 0,
                Some(n) => u32::try_from(n)
                    .map_err(|_| format!("trigger: `confirmations` {n} is too large"))?,
            };
            known.chain(chain_id).map_err(|e| format!("trigger: {e}"))?;
            known
                .chain_event(&on)
                .map_err(|e| format!("trigger: {e}"))?;
            Ok(WorkflowTrigger::Chain {
                chain_id,
                on,
                confirmations,
            })
        }
        (None, Some(_)) => Err("trigger: `chain` must be an object".into()),
        (None, None) => Err(r#"trigger: a trigger is {"cron": …} or {"chain": {…}}"#.into()),
    }
}

fn parse_step(
    index: usize,
    raw: &Value,
    scope: &Visible<'_>,
    known: &impl Known,
) -> Result<Step, String> {
    let position = Place::Position(index + 1);
    let Value::Object(map) = raw else {
        return Err(format!("{position}: a step is a JSON object"));
    };
    let id = Fields::new(map, position.clone()).required_str("id")?;
    if !is_valid_id(id) {
        return Err(format!(
            "{position}: `id` must match [a-z][a-z0-9_-]{{0,63}}, not {id:?}"
        ));
    }
    if scope.earlier().contains(&id) {
        return Err(format!("{position}: duplicate id `{id}`"));
    }
    let place = Place::Step(id.to_owned());
    let fields = Fields::new(map, place.clone());
    let type_name = fields.required_str("type")?;
    // An unknown type has no fields of its own: `parse_kind` names it.
    let allowed: Vec<&str> = COMMON_FIELDS
        .iter()
        .chain(StepKind::fields(type_name))
        .copied()
        .collect();
    if STEP_TYPES.contains(&type_name) {
        fields.allow(&allowed, &format!("a `{type_name}` step"))?;
    }
    let kind = parse_kind(type_name, &fields, known)?;
    let in_step = |e: String| format!("{place}: {e}");
    // Secrets may be read only where they leave in the request they are for.
    let secrets = matches!(kind, StepKind::Http { .. });
    for (field, value) in kind.template_fields() {
        check_templates(&value, scope, secrets).map_err(|e| in_step(format!("`{field}`: {e}")))?;
    }
    let when = fields.str("when")?.map(str::to_owned);
    if let Some(when) = &when {
        check_template(when, true, scope, false).map_err(|e| in_step(format!("`when`: {e}")))?;
    }
    let timeout_ms = fields.u64("timeout")?;
    if let Some(ms) = timeout_ms {
        if !(1..=MAX_STEP_TIMEOUT_MS).contains(&ms) {
            return Err(in_step(format!(
                "`timeout` is in milliseconds, 1 to {MAX_STEP_TIMEOUT_MS}, not {ms}"
            )));
        }
    }
    let retries = match fields.u64("retries")? {
        None => 0,
        Some(n) if n <= u64::from(MAX_RETRIES) => n as u32,
        Some(n) => return Err(in_step(format!("`retries` is 0 to {MAX_RETRIES}, not {n}"))),
    };
    Ok(Step {
        id: id.to_owned(),
        kind,
        when,
        timeout_ms,
        retries,
    })
}

fn parse_kind(
    type_name: &str,
    fields: &Fields<'_>,
    known: &impl Known,
) -> Result<StepKind, String> {
    let place = fields.place();
    let check = |r: Result<(), String>| r.map_err(|e| format!("{place}: {e}"));
    Ok(match type_name {
        "run" => {
            let handler = fields.required_name("handler")?;
            check(known.handler(handler))?;
            StepKind::Run {
                handler: handler.to_owned(),
                input: fields.value_or("input", Value::String(String::new())),
            }
        }
        "call" => {
            let component = fields.required_name("component")?;
            let function = fields.required_name("function")?;
            check(known.callable(component, function))?;
            StepKind::Call {
                component: component.to_owned(),
                function: function.to_owned(),
                args: fields.array("args")?,
            }
        }
        "job" | "wasm_validation" => {
            let wasm_hash = fields.required_name("wasmHash")?;
            if !is_sha256_hex(wasm_hash) {
                return Err(format!(
                    "{place}: `wasmHash` must be 64 lower-case hex digits, not {wasm_hash:?}"
                ));
            }
            check(known.job(wasm_hash))?;
            let wasm_hash = wasm_hash.to_owned();
            let input = fields.value_or("input", Value::Object(Map::new()));
            if type_name == "job" {
                StepKind::Job { wasm_hash, input }
            } else {
                StepKind::WasmValidation { wasm_hash, input }
            }
        }
        "http" => parse_http(fields)?,
        "eth" => {
            let chain_id = fields.required_u64("chain_id")?;
            check(known.chain(chain_id))?;
            let method = fields.required_name("method")?;
            check(known.eth_method(method))?;
            StepKind::Eth {
                chain_id,
                method: method.to_owned(),
                params: fields.array("params")?,
            }
        }
        other => {
            return Err(format!(
                "{place}: unknown type `{other}` (known: {})",
                STEP_TYPES.join(", ")
            ))
        }
    })
}

fn parse_http(fields: &Fields<'_>) -> Result<StepKind, String> {
    let place = fields.place();
    let method = fields.required_name("method")?.to_ascii_uppercase();
    if !HTTP_METHODS.contains(&method.as_str()) {
        return Err(format!(
            "{place}: `method` must be one of {}, not {method:?}",
            HTTP_METHODS.join(", ")
        ));
    }
    let url = fields.required_str("url")?;
    // A templated URL is checked when it is rendered (and then again by the
    // outbound policy); a literal one is checked now.
    if !template::is_template(url) {
        check_url(url).map_err(|e| format!("{place}: `url`: {e}"))?;
    }
    let headers = match fields.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| {
                let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                    return Err(format!("{place}: `headers`: {name:?} is not a header name"));
                };
                if is_forbidden_header(&header) {
                    return Err(format!(
                        "{place}: `headers`: {name:?} is set by the node, not by a workflow (as for guests' requests)"
                    ));
                }
                match value {
                    // A literal value is checked now, a template once rendered.
                    Value::String(v)
                        if !template::is_template(v) && http::HeaderValue::from_str(v).is_err() =>
                    {
                        Err(format!(
                            "{place}: `headers`: the value of {name:?} is not a header value"
                        ))
                    }
                    Value::String(v) => Ok((name.clone(), v.clone())),
                    _ => Err(format!(
                        "{place}: `headers`: the value of {name:?} must be a string"
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{place}: `headers` must be an object of strings")),
    };
    Ok(StepKind::Http {
        method,
        url: url.to_owned(),
        headers,
        body: fields.get("body").filter(|b| !b.is_null()).cloned(),
    })
}

/// An absolute `http` or `https` URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(()),
        _ => Err(format!(
            "{url:?} is neither a template nor an http(s) URL with a host"
        )),
    }
}

fn is_valid_id(id: &str) -> bool {
    id.as_bytes().first().is_some_and(u8::is_ascii_lowercase) && is_valid_name(id)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn headers_object<S: Serializer>(headers: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.iter().map(|(k, v)| (k, v)))
}

/// Headers a workflow's `http` step may not set: those a guest's outgoing
/// request may not set either (`Host`, `Connection`, `Transfer-Encoding`…),
/// and `Content-Length`, which the node writes from the body.
pub fn is_forbidden_header(name: &http::HeaderName) -> bool {
    wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
        || name == http::header::CONTENT_LENGTH
}
