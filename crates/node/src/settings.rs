//! Checking what a client sends with a component: its settings, and the
//! export and arguments of a call by name.

use wasmatic_api::NodeError;
use wasmatic_guests::handler::Entry;
use wasmatic_guests::registry::{Handler, HandlerInfo};
use wasmatic_net::Rule;
use wasmatic_state::HandlerSettings;

/// A component's own outbound allow list, parsed.
fn parse_rules(allow: Option<&[String]>) -> Result<Option<Vec<Rule>>, NodeError> {
    allow
        .map(|list| {
            list.iter()
                .map(|r| Rule::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| NodeError::Invalid(format!("bad outbound rule: {e}")))
        })
        .transpose()
}

/// Most configuration pairs a component may have, and most bytes in all.
const MAX_CONFIG_PAIRS: usize = 64;
const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Most calls one instance of a component may serve.
pub const MAX_REUSE: u32 = 10_000;

/// Checks a component's settings; sorts its configuration by key.
/// Answers them with the parsed outbound rules.
pub(super) fn check_settings(
    mut settings: HandlerSettings,
) -> Result<(HandlerSettings, Option<Vec<Rule>>), NodeError> {
    let rules = parse_rules(settings.allow.as_deref())?;
    if !(1..=MAX_REUSE).contains(&settings.reuse) {
        return Err(NodeError::Invalid(format!(
            "reuse must be from 1 (a fresh instance for every call) to {MAX_REUSE}, not {}",
            settings.reuse
        )));
    }
    settings.config = check_config(settings.config)?;
    Ok((settings, rules))
}

/// Checks a configuration and sorts it by key.
fn check_config(mut config: Vec<(String, String)>) -> Result<Vec<(String, String)>, NodeError> {
    if config.len() > MAX_CONFIG_PAIRS {
        return Err(NodeError::Invalid(format!(
            "{} configuration pairs; at most {MAX_CONFIG_PAIRS} are allowed",
            config.len()
        )));
    }
    let bytes: usize = config.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_CONFIG_BYTES {
        return Err(NodeError::TooLarge(format!(
            "the configuration has {bytes} bytes; at most {MAX_CONFIG_BYTES} are allowed"
        )));
    }
    for (key, value) in &config {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(NodeError::Invalid(format!(
                "`{key}={value}` is not a configuration pair: use KEY=VALUE, with a key that is not empty and holds no `=`"
            )));
        }
    }
    config.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = config.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(NodeError::Invalid(format!(
            "configuration key `{}` is given twice",
            pair[0].0
        )));
    }
    Ok(config)
}

/// The error for running or scheduling a component of another world.
pub(super) fn not_a_handler(info: &HandlerInfo) -> NodeError {
    let exports: Vec<&str> = info.exports.iter().map(|e| e.name.as_str()).collect();
    NodeError::Invalid(format!(
        "`{}` is not of the handler world (it does not export `handler: func(input: string) -> string`): call its exports with POST /call/{}/FUNC; it exports {}",
        info.name,
        info.name,
        if exports.is_empty() {
            "no functions".to_string()
        } else {
            exports.join(", ")
        }
    ))
}

/// Finds the function `export` of a component (`func`, `interface.func`, or
/// `short.func` where `short` is the interface's name without its package
/// and version) and converts the JSON array `args` to its parameters.
pub(super) fn resolve_export(
    handler: &Handler,
    export: &str,
    args: &str,
) -> Result<Entry, NodeError> {
    let component = handler.compiled.pre.component();
    let name = &handler.info.name;
    let known: Vec<&str> = handler
        .info
        .exports
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let not_found = || {
        NodeError::NotFound(format!(
            "`{name}` has no exported function `{export}`; it exports {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    };
    // Function names hold no dots; interface names may (versions do).
    let (found, func_name) = match export.rsplit_once('.') {
        None => (component.get_export(None, export), export),
        Some((interface, func)) => {
            let full = handler
                .info
                .exports
                .iter()
                .filter_map(|e| e.name.rsplit_once('.').map(|(i, _)| i))
                .find(|i| *i == interface || short_interface_name(i) == interface)
                .ok_or_else(not_found)?;
            let (_, instance) = component.get_export(None, full).ok_or_else(not_found)?;
            (component.get_export(Some(&instance), func), func)
        }
    };
    let Some((wasmtime::component::types::ComponentItem::ComponentFunc(func), index)) = found
    else {
        return Err(not_found());
    };
    let signature = wasmatic_sandbox::values::signature(func_name, &func);
    let args = wasmatic_sandbox::values::parse_args(args)
        .map_err(|e| NodeError::Invalid(format!("{e}; `{export}` is `{signature}`")))?;
    let args = wasmatic_sandbox::values::args_from_json(&func, &args)
        .map_err(|e| NodeError::Invalid(format!("`{signature}`: {e}")))?;
    let results = func.results().len();
    Ok(Entry::Export {
        index,
        args,
        results,
    })
}

/// `cipher` for `example:caesar/cipher@0.1.0`.
fn short_interface_name(full: &str) -> &str {
    let path = full.rsplit_once('/').map_or(full, |(_, p)| p);
    path.split_once('@').map_or(path, |(p, _)| p)
}
