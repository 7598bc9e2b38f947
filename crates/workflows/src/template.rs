//! Workflow templates: `{{ trigger.address }}`, `{{ steps.bal.output }}`,
//! rendered by minijinja (Jinja syntax, strict about undefined values).
//!
//! Every string in a step's input is a template. A string that is exactly one
//! `{{ expression }}` yields the expression's *value*, so a number stays a
//! number and an object stays an object; any other string renders to text
//! (an object inside text prints in Jinja's own notation: use `| tojson` for
//! JSON). Keys of objects are never templated.
//!
//! The engine is configured for untrusted definitions: no loader (so no
//! `include` or `import` reaches the filesystem), no auto-escaping (outputs
//! are JSON and text, not HTML), a fuel budget per render so that a loop
//! cannot run forever or allocate without bound, and a size cap per template.

use std::collections::BTreeSet;

use minijinja::value::Serde;
use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::Serialize;

/// The longest template accepted, in bytes: definitions are small, and a
/// cap keeps the cost of parsing each string bounded.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// The work one render may do (about one unit per instruction and per 64
/// bytes allocated, see `Environment::set_fuel`): plenty for string glue and
/// small loops, far too little for a runaway one.
const FUEL: u64 = 100_000;

/// The variables a template can read, as the runner knows them at a step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    /// The run's trigger: the body of `POST /workflows/NAME/run`, the cron
    /// tick or the chain event. Never changed once the run starts.
    pub trigger: serde_json::Value,
    /// `id -> {"output": <JSON>}` for each step that has run; a skipped step
    /// is `{"output": null, "skipped": true}`. Steps are added, never
    /// changed.
    pub steps: serde_json::Map<String, serde_json::Value>,
    /// The workflow's name (`{{ workflow.name }}`).
    pub workflow: String,
    /// The run's id (`{{ run.id }}`).
    pub run_id: u64,
    /// The trigger and the steps' outputs as the engine's values, each
    /// converted once for the whole run rather than for every template (a
    /// trigger may be megabytes, and a run renders hundreds of templates).
    converted: Converted,
}

impl Scope {
    pub fn new(trigger: serde_json::Value, workflow: String, run_id: u64) -> Self {
        Scope {
            trigger,
            workflow,
            run_id,
            ..Scope::default()
        }
    }
}

/// A scope's parts already converted; a clone starts empty.
#[derive(Default)]
struct Converted {
    trigger: std::sync::OnceLock<Value>,
    steps: std::sync::Mutex<std::collections::HashMap<String, Value>>,
}

impl Clone for Converted {
    fn clone(&self) -> Self {
        Converted::default()
    }
}

impl PartialEq for Converted {
    /// A cache: what it holds says nothing about the scope.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Converted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Converted")
    }
}

/// The root variables of a scope, the only ones a definition may name.
pub const ROOTS: [&str; 5] = ["trigger", "steps", "workflow", "run", "secrets"];

/// The node runner's secrets a template may read (`{{ secrets.NAME }}`):
/// given only to the renders of an `http` step's request.
pub type Secrets = std::collections::BTreeMap<String, String>;

/// Whether `s` uses template syntax at all; strings that do not are literals
/// and skip the engine entirely.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// Renders every string in `value` (nested in arrays and objects).
pub fn render(value: &serde_json::Value, scope: &Scope) -> Result<serde_json::Value, String> {
    render_with(value, scope, None)
}

/// Renders every string in `value`, with `secrets` readable when given.
pub fn render_with(
    value: &serde_json::Value,
    scope: &Scope,
    secrets: Option<&Secrets>,
) -> Result<serde_json::Value, String> {
    let env = environment();
    let ctx = context(scope, secrets);
    render_value(&env, value, &ctx)
}

/// Renders `template` to text, with `secrets` readable when given.
pub fn render_text_with(
    template: &str,
    scope: &Scope,
    secrets: Option<&Secrets>,
) -> Result<String, String> {
    let env = environment();
    text(&env, template, &context(scope, secrets))
}

/// Evaluates a `when` condition: `{{ expr }}` or a bare `expr`, true by
/// Jinja's truthiness. False are `false`, `none`, `0`, `0.0`, the empty
/// string and empty lists and objects; every other value is true, including
/// the *strings* `"false"` and `"0"` (compare explicitly, as in
/// `{{ steps.x.output == "false" }}`, when an output is such text).
pub fn condition(template: &str, scope: &Scope) -> Result<bool, String> {
    check_size(template)?;
    let env = environment();
    let source = condition_expression(template);
    let expr = env
        .compile_expression(source)
        .map_err(|e| describe(&e, template))?;
    let value = expr
        .eval(context(scope, None))
        .map_err(|e| describe(&e, template))?;
    Ok(value.is_true())
}

/// The variable paths `template` reads, as dotted attribute chains
/// (`steps.bal.output`, `trigger`), or why it does not parse.
pub fn references(template: &str) -> Result<BTreeSet<String>, String> {
    check_size(template)?;
    let env = environment();
    let parsed = env
        .template_from_str(template)
        .map_err(|e| describe(&e, template))?;
    Ok(without_globals(&env, parsed.undeclared_variables(true)))
}

/// Like [`references`] for a `when` condition (`{{ expr }}` or bare `expr`).
pub fn condition_references(template: &str) -> Result<BTreeSet<String>, String> {
    check_size(template)?;
    let env = environment();
    let expr = env
        .compile_expression(condition_expression(template))
        .map_err(|e| describe(&e, template))?;
    Ok(without_globals(&env, expr.undeclared_variables(true)))
}

fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // Debug mode makes an undefined-value error name the expression
    // (`steps.bal.output.missing`); it costs nothing until an error.
    env.set_debug(true);
    // Text is written as is; every other value as JSON (`true`, `null`,
    // `{"a": 1}`), not as Python would print it: what a step receives is
    // read by programs, and JSON is what they read.
    env.set_formatter(|out, _state, value| {
        if let Some(text) = value.as_str() {
            return Ok(out.write_str(text)?);
        }
        let json = serde_json::to_string(value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
        })?;
        Ok(out.write_str(&json)?)
    });
    env
}

/// Built-in functions such as `range` and `namespace` are globals, not
/// variables of the scope.
fn without_globals(
    env: &Environment<'_>,
    found: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    found
        .into_iter()
        .filter(|path| {
            let root = path.split('.').next().unwrap_or(path);
            !env.globals().any(|(name, _)| name == root)
        })
        .collect()
}

#[derive(Serialize)]
struct Workflow<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Run {
    id: u64,
}

/// The template context of `scope`: the trigger and each step's entry
/// converted once and then shared (the engine's values are reference
/// counted), the rest built anew, being small.
fn context(scope: &Scope, secrets: Option<&Secrets>) -> Value {
    let trigger = scope
        .converted
        .trigger
        .get_or_init(|| Value::from(Serde(&scope.trigger)))
        .clone();
    let steps: std::collections::BTreeMap<String, Value> = {
        let mut converted = scope
            .converted
            .steps
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        scope
            .steps
            .iter()
            .map(|(id, entry)| {
                let value = converted
                    .entry(id.clone())
                    .or_insert_with(|| Value::from(Serde(entry)))
                    .clone();
                (id.clone(), value)
            })
            .collect()
    };
    let context = minijinja::context! {
        trigger => trigger,
        steps => Value::from(steps),
        workflow => Value::from(Serde(&Workflow { name: &scope.workflow })),
        run => Value::from(Serde(&Run { id: scope.run_id })),
    };
    match secrets {
        Some(secrets) => minijinja::context! { secrets => Value::from(secrets.clone()), ..context },
        None => context,
    }
}

fn render_value<'s>(
    env: &Environment<'s>,
    value: &'s serde_json::Value,
    ctx: &Value,
) -> Result<serde_json::Value, String> {
    Ok(match value {
        serde_json::Value::String(s) => render_string(env, s, ctx)?,
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|item| render_value(env, item, ctx))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(env, v, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn render_string<'s>(
    env: &Environment<'s>,
    s: &'s str,
    ctx: &Value,
) -> Result<serde_json::Value, String> {
    if !is_template(s) {
        return Ok(serde_json::Value::String(s.to_owned()));
    }
    check_size(s)?;
    if let Some(expr) = single_expression(env, s) {
        let value = expr.eval(ctx.clone()).map_err(|e| describe(&e, s))?;
        // Evaluating hands back undefined values (at the top or inside a
        // list or map literal) rather than failing as printing does.
        if has_undefined(&value) {
            return Err(undefined_reference(env, s, ctx)
                .unwrap_or_else(|| format!("`{}` has an undefined value", excerpt(s))));
        }
        return serde_json::to_value(&value)
            .map_err(|e| format!("`{}`: the value is not JSON: {e}", excerpt(s)));
    }
    text(env, s, ctx).map(serde_json::Value::String)
}

fn text<'s>(env: &Environment<'s>, template: &'s str, ctx: &Value) -> Result<String, String> {
    check_size(template)?;
    if !is_template(template) {
        return Ok(template.to_owned());
    }
    env.template_from_str(template)
        .and_then(|t| t.render(ctx.clone()))
        .map_err(|e| describe(&e, template))
}

fn has_undefined(value: &Value) -> bool {
    if value.is_undefined() {
        return true;
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()
            .is_ok_and(|mut items| items.any(|item| has_undefined(&item))),
        ValueKind::Map => value.try_iter().is_ok_and(|mut keys| {
            keys.any(|key| value.get_item(&key).map_or(true, |v| has_undefined(&v)))
        }),
        _ => false,
    }
}

/// The first path that `template` reads and `ctx` lacks, as
/// "`trigger.nope` is undefined".
fn undefined_reference<'s>(
    env: &Environment<'s>,
    template: &'s str,
    ctx: &Value,
) -> Option<String> {
    let parsed = env.template_from_str(template).ok()?;
    let paths = without_globals(env, parsed.undeclared_variables(true));
    paths.iter().find_map(|path| {
        let mut value = ctx.clone();
        let mut end = 0;
        for segment in path.split('.') {
            end += segment.len() + usize::from(end > 0);
            value = value.get_attr(segment).unwrap_or_default();
            if value.is_undefined() {
                return Some(format!("`{}` is undefined", &path[..end]));
            }
        }
        None
    })
}

/// `s` as one expression when it is exactly `{{ expr }}` (whitespace
/// around and `-` trim markers allowed). Whether the inside parses as a
/// single expression is the engine's call: `{{ a }} {{ b }}` does not, while
/// `{{ {"k": {"n": 1}} }}` does.
fn single_expression<'e, 's>(
    env: &'e Environment<'s>,
    s: &'s str,
) -> Option<minijinja::Expression<'e, 's>> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    env.compile_expression(inner).ok()
}

/// A condition is `{{ expr }}` or a bare expression.
fn condition_expression(template: &str) -> &str {
    let trimmed = template.trim();
    match trimmed
        .strip_prefix("{{")
        .and_then(|rest| rest.strip_suffix("}}"))
    {
        Some(inner) => {
            let inner = inner.strip_prefix('-').unwrap_or(inner);
            inner.strip_suffix('-').unwrap_or(inner)
        }
        None => trimmed,
    }
}

fn check_size(template: &str) -> Result<(), String> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(format!(
            "a template is {} bytes, over the limit of {MAX_TEMPLATE_BYTES}",
            template.len()
        ));
    }
    Ok(())
}

/// One line that says what went wrong and where: an undefined value by its
/// expression (`` `steps.bal.output.missing` is undefined ``), anything
/// else with the engine's message and the template it came from.
fn describe(e: &minijinja::Error, template: &str) -> String {
    match (e.kind(), e.detail()) {
        (ErrorKind::UndefinedError, Some(detail)) if detail.contains("is undefined") => {
            detail.to_owned()
        }
        (ErrorKind::OutOfFuel, _) => format!(
            "`{}`: the template does too much work (over its budget of {FUEL})",
            excerpt(template)
        ),
        (kind, Some(detail)) => format!("`{}`: {kind}: {detail}", excerpt(template)),
        (kind, None) => format!("`{}`: {kind}", excerpt(template)),
    }
}

/// The template as quoted in an error: whole when short.
fn excerpt(template: &str) -> String {
    const MAX: usize = 120;
    if template.len() <= MAX {
        return template.to_owned();
    }
    let mut end = MAX;
    while !template.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &template[..end])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Scope {
        let mut steps = serde_json::Map::new();
        steps.insert("bal".into(), json!({"output": "0x10"}));
        steps.insert(
            "ok".into(),
            json!({"output": {"valid": true, "n": 7, "list": [1, 2]}}),
        );
        steps.insert("skip".into(), json!({"output": null, "skipped": true}));
        Scope {
            steps,
            ..Scope::new(
                json!({"address": "0xabc", "amount": 5, "flag": false}),
                "balance-check".into(),
                42,
            )
        }
    }

    #[test]
    fn a_single_expression_yields_its_value() {
        let s = scope();
        assert_eq!(render(&json!("{{ trigger.amount }}"), &s), Ok(json!(5)));
        assert_eq!(
            render(&json!("  {{steps.ok.output}} "), &s),
            Ok(json!({"valid": true, "n": 7, "list": [1, 2]}))
        );
        assert_eq!(render(&json!("{{- trigger.flag -}}"), &s), Ok(json!(false)));
        assert_eq!(
            render(&json!("{{ steps.skip.output }}"), &s),
            Ok(json!(null))
        );
        assert_eq!(
            render(&json!("{{ {'k': {'n': run.id}} }}"), &s),
            Ok(json!({"k": {"n": 42}}))
        );
        assert_eq!(
            render(&json!("{{ steps.ok.output.n + 1 }}"), &s),
            Ok(json!(8))
        );
    }

    #[test]
    fn other_strings_render_to_text_and_literals_pass_through() {
        let s = scope();
        assert_eq!(
            render(&json!("{{ workflow.name }}#{{ run.id }}"), &s),
            Ok(json!("balance-check#42"))
        );
        // `tojson` makes text, which stays text.
        assert_eq!(
            render(&json!("{{ steps.ok.output.list | tojson }}"), &s),
            Ok(json!("[1, 2]")),
        );
        assert_eq!(
            render(&json!("n={{ steps.ok.output.list | tojson }}"), &s),
            Ok(json!("n=[1, 2]"))
        );
        // No template syntax: untouched, braces and all.
        assert_eq!(
            render(&json!("{\"a\": 1} }}"), &s),
            Ok(json!("{\"a\": 1} }}"))
        );
        assert_eq!(render(&json!(12), &s), Ok(json!(12)));
        // No HTML escaping.
        assert_eq!(
            render_text_with("{{ '<a&b>' }}", &s, None),
            Ok("<a&b>".to_owned())
        );
    }

    #[test]
    fn nested_values_render_and_keys_do_not() {
        let s = scope();
        let input = json!({
            "{{ trigger.address }}": ["{{ trigger.address }}", {"b": "{{ steps.bal.output }}"}],
            "n": 1,
            "none": null,
        });
        assert_eq!(
            render(&input, &s),
            Ok(json!({"{{ trigger.address }}": ["0xabc", {"b": "0x10"}], "n": 1, "none": null}))
        );
    }

    #[test]
    fn a_missing_value_is_an_error_naming_it() {
        let s = scope();
        let e = render(&json!({"a": ["{{ steps.ok.output.missing }}"]}), &s).unwrap_err();
        assert!(e.contains("`steps.ok.output.missing` is undefined"), "{e}");
        let e = render(&json!("{{ {'k': [trigger.nope]} }}"), &s).unwrap_err();
        assert_eq!(e, "`trigger.nope` is undefined");
        let e = render_text_with("x {{ trigger.nope }} y", &s, None).unwrap_err();
        assert!(e.contains("`trigger.nope` is undefined"), "{e}");
        let e = condition("steps.later.output", &s).unwrap_err();
        assert!(e.contains("`steps.later` is undefined"), "{e}");
        // `is defined` is how a template asks without failing.
        assert_eq!(condition("trigger.nope is defined", &s), Ok(false));
    }

    #[test]
    fn conditions_follow_jinja_truthiness() {
        let mut s = scope();
        s.trigger = json!({
            "f": false, "t": true, "z": 0, "n": null, "e": "", "l": [], "o": {},
            "s_false": "false", "s_zero": "0", "one": 1, "l1": [0],
        });
        for falsy in ["f", "z", "n", "e", "l", "o"] {
            assert_eq!(
                condition(&format!("{{{{ trigger.{falsy} }}}}"), &s),
                Ok(false),
                "{falsy}"
            );
        }
        for truthy in ["t", "s_false", "s_zero", "one", "l1"] {
            assert_eq!(
                condition(&format!("trigger.{truthy}"), &s),
                Ok(true),
                "{truthy}"
            );
        }
        assert_eq!(condition("{{ steps.ok.output.valid }}", &scope()), Ok(true));
        assert_eq!(condition("  steps.ok.output.n > 10 ", &scope()), Ok(false));
    }

    #[test]
    fn runaway_and_oversized_templates_are_refused() {
        let s = scope();
        let e = render_text_with(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &s,
            None,
        )
        .unwrap_err();
        assert!(e.contains("too much work"), "{e}");
        // Values made by one expression are paid for too.
        let e = render(&json!("{{ 'x' * 100000000 }}"), &s).unwrap_err();
        assert!(e.contains("too much work"), "{e}");
        let big = format!(
            "{{{{ trigger.address }}}}{}",
            " ".repeat(MAX_TEMPLATE_BYTES)
        );
        let e = render(&json!(big), &s).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
    }

    #[test]
    fn no_template_reaches_the_filesystem() {
        // Built without multi-template support, `include`, `import` and
        // `extends` are not even statements.
        for statement in ["include", "import", "extends"] {
            let e = render_text_with(
                &format!("{{% {statement} '/etc/passwd' %}}"),
                &scope(),
                None,
            )
            .unwrap_err();
            assert!(e.contains(&format!("unknown statement {statement}")), "{e}");
        }
    }

    #[test]
    fn references_are_dotted_paths_without_globals() {
        let refs = references("{{ steps.bal.output.x }} {% for i in range(3) %}{{ i }}{{ loop.index }}{% endfor %}{{ trigger }}")
            .unwrap();
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            vec!["steps.bal.output.x".to_owned(), "trigger".to_owned()]
        );
        let refs = condition_references("{{ steps.ok.output.valid and run.id }}").unwrap();
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            vec!["run.id".to_owned(), "steps.ok.output.valid".to_owned()]
        );
        assert!(references("{{ unclosed")
            .unwrap_err()
            .contains("syntax error"));
        assert!(condition_references("{{ a }} and {{ b }}").is_err());
    }
}
