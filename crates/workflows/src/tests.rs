//! Definitions: what parses, what serializes back, and every refusal.

use serde_json::{json, Value};

use super::definition::MAX_STEPS;
use super::*;

const HASH: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const UNKNOWN_HASH: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A node with one of everything.
struct Node;

fn known(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} is not known to this node"))
    }
}

impl Known for Node {
    fn handler(&self, name: &str) -> Result<(), String> {
        known(name == "formatter", &format!("handler `{name}`"))
    }
    fn callable(&self, name: &str, function: &str) -> Result<(), String> {
        known(
            name == "caesar" && function == "encrypt",
            &format!("`{name}.{function}`"),
        )
    }
    fn job(&self, wasm_hash: &str) -> Result<(), String> {
        known(wasm_hash == HASH, &format!("job {wasm_hash}"))
    }
    fn chain(&self, chain_id: u64) -> Result<(), String> {
        known(chain_id == 31337, &format!("chain {chain_id}"))
    }
    fn cron(&self, line: &str) -> Result<(), String> {
        known(
            line.split_whitespace().count() == 6,
            &format!("cron {line:?}"),
        )
    }
    fn chain_event(&self, on: &Value) -> Result<(), String> {
        known(on == "block" || on.get("logs").is_some(), "the event")
    }
    fn eth_method(&self, method: &str) -> Result<(), String> {
        known(method.starts_with("eth_get"), &format!("method {method}"))
    }
}

/// The definition of issue #13, one step of each type.
fn example() -> Value {
    json!({
        "name": "balance-check",
        "trigger": {"cron": "*/5 * * * * *"},
        "steps": [
            {"id": "bal", "type": "eth", "chain_id": 31337, "method": "eth_getBalance",
             "params": ["{{ trigger.address }}", "latest"]},
            {"id": "ok", "type": "wasm_validation", "wasmHash": HASH,
             "input": {"address": "{{trigger.address}}", "minBalance": "1000000000000000000"},
             "timeout": 5000},
            {"id": "fmt", "type": "run", "handler": "formatter",
             "input": {"balance": "{{ steps.bal.output }}"},
             "when": "{{ steps.ok.output.valid }}", "retries": 1},
            {"id": "c", "type": "call", "component": "caesar", "function": "encrypt",
             "args": ["{{ steps.fmt.output }}"]},
            {"id": "j", "type": "job", "wasmHash": HASH, "input": {"x": 1}},
            {"id": "h", "type": "http", "method": "POST", "url": "http://127.0.0.1:9/hook",
             "headers": {"content-type": "application/json"},
             "body": {"v": "{{ steps.c.output }}"}}
        ],
        "result": "{{ steps.fmt.output }}"
    })
}

fn parse_value(definition: &Value) -> Result<Workflow, String> {
    parse(&serde_json::to_vec(definition).unwrap(), &Node)
}

/// The error for `example()` changed by `change`.
fn refusal(change: impl FnOnce(&mut Value)) -> String {
    let mut definition = example();
    change(&mut definition);
    match parse_value(&definition) {
        Ok(_) => panic!("accepted: {definition}"),
        Err(e) => e,
    }
}

fn step(definition: &mut Value, index: usize) -> &mut serde_json::Map<String, Value> {
    definition["steps"][index].as_object_mut().unwrap()
}

#[track_caller]
fn assert_refused(change: impl FnOnce(&mut Value), expected: &str) {
    let e = refusal(change);
    assert!(e.contains(expected), "expected {expected:?} in {e:?}");
}

#[test]
fn the_example_parses_with_defaults_filled_in() {
    let wf = parse_value(&example()).unwrap();
    assert_eq!(wf.name, "balance-check");
    assert_eq!(
        wf.trigger,
        Some(WorkflowTrigger::Cron("*/5 * * * * *".into()))
    );
    let types: Vec<_> = wf.steps.iter().map(|s| s.kind.type_name()).collect();
    assert_eq!(
        types,
        ["eth", "wasm_validation", "run", "call", "job", "http"]
    );
    assert_eq!(wf.steps[1].timeout_ms, Some(5000));
    assert_eq!(wf.steps[2].retries, 1);
    assert_eq!(
        wf.steps[2].when.as_deref(),
        Some("{{ steps.ok.output.valid }}")
    );
    assert_eq!(
        wf.steps[5].kind,
        StepKind::Http {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(json!({"v": "{{ steps.c.output }}"})),
        }
    );

    let minimal = json!({"name": "m", "steps": [
        {"id": "r", "type": "run", "handler": "formatter"},
        {"id": "j", "type": "job", "wasmHash": HASH},
        {"id": "e", "type": "eth", "chain_id": 31337, "method": "eth_getBlockByNumber"},
        {"id": "c", "type": "call", "component": "caesar", "function": "encrypt"},
        {"id": "h", "type": "http", "method": "get", "url": "https://example.com"},
    ]});
    let wf = parse_value(&minimal).unwrap();
    assert_eq!(wf.trigger, None);
    assert_eq!(wf.result, None);
    let kinds: Vec<_> = wf.steps.into_iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds[0],
        StepKind::Run {
            handler: "formatter".into(),
            input: json!("")
        }
    );
    assert_eq!(
        kinds[1],
        StepKind::Job {
            wasm_hash: HASH.into(),
            input: json!({})
        }
    );
    assert!(matches!(&kinds[2], StepKind::Eth { params, .. } if params.is_empty()));
    assert!(matches!(&kinds[3], StepKind::Call { args, .. } if args.is_empty()));
    assert!(matches!(&kinds[4], StepKind::Http { method, .. } if method == "GET"));
}

#[test]
fn a_workflow_serializes_back_to_the_same_shape() {
    let wf = parse_value(&example()).unwrap();
    let shown = serde_json::to_value(&wf).unwrap();
    assert_eq!(shown, example());
    assert_eq!(parse_value(&shown).unwrap(), wf);

    let chain = json!({"name": "on-chain",
        "trigger": {"chain": {"chain_id": 31337, "on": {"logs": {"topics": ["0x01", null]}}}},
        "steps": [{"id": "r", "type": "run", "handler": "formatter"}]});
    let wf = parse_value(&chain).unwrap();
    let shown = serde_json::to_value(&wf).unwrap();
    assert_eq!(shown["trigger"]["chain"]["confirmations"], 0);
    assert_eq!(
        shown["steps"][0],
        json!({"id": "r", "type": "run", "handler": "formatter", "input": ""})
    );
    assert_eq!(parse_value(&shown).unwrap(), wf);
}

#[test]
fn the_document_must_be_a_json_object_with_a_name_and_steps() {
    assert!(parse(b"{", &Node).unwrap_err().contains("not JSON"));
    assert!(parse(b"[]", &Node)
        .unwrap_err()
        .contains("a workflow is a JSON object"));
    assert_refused(|d| d["name"] = json!("Bad Name"), "`name` must match");
    assert_refused(|d| d["name"] = json!(7), "`name` must be a string");
    assert_refused(
        |d| drop(d.as_object_mut().unwrap().remove("name")),
        "`name` is missing",
    );
    assert_refused(
        |d| drop(d.as_object_mut().unwrap().remove("steps")),
        "`steps` is missing",
    );
    assert_refused(|d| d["steps"] = json!({}), "`steps` must be an array");
    assert_refused(|d| d["steps"] = json!([]), "1 to 64 steps, not 0");
    let too_many: Vec<Value> = (0..=MAX_STEPS)
        .map(|i| json!({"id": format!("s{i}"), "type": "run", "handler": "formatter"}))
        .collect();
    assert_refused(|d| d["steps"] = json!(too_many), "1 to 64 steps, not 65");
    assert_refused(|d| d["extra"] = json!(1), "workflow: unknown field `extra`");
    assert_refused(
        |d| d["result"] = json!(1),
        "`result` must be a template string",
    );
}

#[test]
fn ids_are_required_unique_and_usable_as_template_keys() {
    assert_refused(
        |d| d["steps"][1] = json!("run"),
        "step 2: a step is a JSON object",
    );
    assert_refused(|d| drop(step(d, 1).remove("id")), "step 2: `id` is missing");
    for bad in ["", "Bal", "9lives", "a.b", "a b", &"x".repeat(65)] {
        assert_refused(
            |d| d["steps"][1]["id"] = json!(bad),
            "step 2: `id` must match",
        );
    }
    assert_refused(
        |d| d["steps"][1]["id"] = json!("bal"),
        "step 2: duplicate id `bal`",
    );
}

#[test]
fn types_and_fields_are_checked_per_type() {
    assert_refused(
        |d| drop(step(d, 0).remove("type")),
        "step `bal`: `type` is missing",
    );
    assert_refused(
        |d| d["steps"][0]["type"] = json!("shell"),
        "step `bal`: unknown type `shell` (known: run, call, job, wasm_validation, http, eth)",
    );
    assert_refused(
        |d| d["steps"][2]["wasmHash"] = json!(HASH),
        "step `fmt`: unknown field `wasmHash` (a `run` step has: id, type, when, timeout, retries, handler, input)",
    );
    assert_refused(
        |d| d["steps"][5]["bodyy"] = json!(1),
        "step `h`: unknown field `bodyy`",
    );
    for (index, field) in [
        (0, "chain_id"),
        (0, "method"),
        (1, "wasmHash"),
        (2, "handler"),
        (3, "component"),
        (3, "function"),
        (4, "wasmHash"),
        (5, "method"),
        (5, "url"),
    ] {
        let id = example()["steps"][index]["id"].as_str().unwrap().to_owned();
        assert_refused(
            |d| drop(step(d, index).remove(field)),
            &format!("step `{id}`: `{field}` is missing"),
        );
    }
    assert_refused(
        |d| d["steps"][0]["params"] = json!("x"),
        "step `bal`: `params` must be an array",
    );
    assert_refused(
        |d| d["steps"][3]["args"] = json!({}),
        "step `c`: `args` must be an array",
    );
    assert_refused(
        |d| d["steps"][0]["chain_id"] = json!("31337"),
        "`chain_id` must be a non-negative integer",
    );
}

#[test]
fn names_and_hashes_are_fixed_and_known_to_the_node() {
    assert_refused(
        |d| d["steps"][2]["handler"] = json!("{{ trigger.h }}"),
        "step `fmt`: `handler` is checked when the workflow is defined, so it cannot be a template",
    );
    assert_refused(
        |d| d["steps"][2]["handler"] = json!("nope"),
        "step `fmt`: handler `nope` is not known",
    );
    assert_refused(
        |d| d["steps"][3]["function"] = json!("decrypt"),
        "step `c`: `caesar.decrypt` is not known",
    );
    assert_refused(
        |d| d["steps"][4]["wasmHash"] = json!(HASH.to_uppercase()),
        "step `j`: `wasmHash` must be 64 lower-case hex",
    );
    assert_refused(
        |d| d["steps"][1]["wasmHash"] = json!("abc"),
        "step `ok`: `wasmHash` must be 64 lower-case hex",
    );
    assert_refused(
        |d| d["steps"][4]["wasmHash"] = json!(UNKNOWN_HASH),
        "step `j`: job bbbb",
    );
    assert_refused(
        |d| d["steps"][0]["chain_id"] = json!(1),
        "step `bal`: chain 1 is not known",
    );
    assert_refused(
        |d| d["steps"][0]["method"] = json!("eth_sendTransaction"),
        "step `bal`: method eth_sendTransaction",
    );
    assert_refused(
        |d| d["steps"][2]["handler"] = json!(""),
        "step `fmt`: `handler` is empty",
    );
}

#[test]
fn http_steps_take_a_known_method_and_an_http_url() {
    assert_refused(
        |d| d["steps"][5]["method"] = json!("TRACE"),
        "step `h`: `method` must be one of GET, POST, PUT, PATCH, DELETE, HEAD",
    );
    assert_refused(
        |d| d["steps"][5]["url"] = json!("ftp://127.0.0.1/x"),
        "step `h`: `url`: \"ftp://127.0.0.1/x\" is neither a template nor an http(s) URL",
    );
    assert_refused(|d| d["steps"][5]["url"] = json!("/hook"), "step `h`: `url`");
    assert_refused(
        |d| d["steps"][5]["url"] = json!("http://{{ trigger.host"),
        "step `h`: `url`: `http://{{ trigger.host`: syntax error",
    );
    assert_refused(
        |d| d["steps"][5]["headers"] = json!({"bad name": "x"}),
        "step `h`: `headers`: \"bad name\" is not a header name",
    );
    assert_refused(
        |d| d["steps"][5]["headers"] = json!({"x-n": "a\nb"}),
        "step `h`: `headers`: the value of \"x-n\" is not a header value",
    );
    assert_refused(
        |d| d["steps"][5]["headers"] = json!({"x-n": 1}),
        "step `h`: `headers`: the value of \"x-n\" must be a string",
    );
    assert_refused(
        |d| d["steps"][5]["headers"] = json!({"x-n": "{{ steps.later.output }}"}),
        "step `h`: `headers`: `steps.later` refers to no step",
    );
    let mut ok = example();
    ok["steps"][5]["url"] = json!("{{ trigger.url }}");
    assert!(parse_value(&ok).is_ok());
}

#[test]
fn templates_must_parse_and_read_only_what_exists_before_them() {
    assert_refused(
        |d| d["steps"][2]["input"] = json!({"a": ["{{ 1 + }}"]}),
        "step `fmt`: `input`: `{{ 1 + }}`: syntax error",
    );
    assert_refused(
        |d| d["steps"][2]["input"] = json!({"b": "{{ steps.c.output }}"}),
        "step `fmt`: `input`: `steps.c` refers to a step that has not run yet",
    );
    assert_refused(
        |d| d["steps"][2]["input"] = json!("{{ steps.fmt.output }}"),
        "step `fmt`: `input`: `steps.fmt` refers to a step that has not run yet",
    );
    assert_refused(
        |d| d["steps"][0]["params"] = json!(["{{ steps.nope.output }}"]),
        "step `bal`: `params`: `steps.nope` refers to no step of this workflow",
    );
    assert_refused(
        |d| d["steps"][3]["args"] = json!(["{{ steps['bal'].output }}"]),
        "step `c`: `args`: `steps` must be followed by a step id",
    );
    assert_refused(
        |d| d["steps"][4]["input"] = json!({"x": "{{ secrets.key }}"}),
        "step `j`: `input`: `secrets` may be read only in an `http` step's `url`, `headers` and `body`",
    );
    assert_refused(
        |d| d["steps"][4]["input"] = json!({"x": "{{ secret.key }}"}),
        "step `j`: `input`: `secret` is not defined (templates read trigger, steps, workflow, run, secrets)",
    );
    assert_refused(
        |d| d["steps"][4]["input"] = json!({"x": "{{ workflow.id }}"}),
        "`workflow.id` does not exist",
    );
    assert_refused(
        |d| d["steps"][4]["input"] = json!({"x": "{{ run.name }}"}),
        "`run.name` does not exist",
    );
    assert_refused(
        |d| d["steps"][5]["body"] = json!({"v": "{{ steps.zz.output }}"}),
        "step `h`: `body`: `steps.zz` refers to no step",
    );
    let mut ok = example();
    ok["steps"][4]["input"] = json!({
        "all": "{{ workflow.name }}/{{ run.id }}/{{ trigger.x.y }}/{{ steps.bal.output }}",
        "loop": "{% for i in range(3) %}{{ i }}{% endfor %}",
    });
    assert!(parse_value(&ok).is_ok());
}

#[test]
fn conditions_and_the_result_are_templates_too() {
    assert_refused(
        |d| d["steps"][2]["when"] = json!("{{ steps.h.output }}"),
        "step `fmt`: `when`: `steps.h` refers to a step that has not run yet",
    );
    assert_refused(
        |d| d["steps"][2]["when"] = json!("{{ a }} and {{ b }}"),
        "step `fmt`: `when`: `{{ a }} and {{ b }}`: syntax error",
    );
    assert_refused(
        |d| d["steps"][2]["when"] = json!(true),
        "step `fmt`: `when` must be a string",
    );
    let mut ok = example();
    ok["steps"][2]["when"] = json!("steps.ok.output.valid and trigger.go");
    assert!(parse_value(&ok).is_ok());

    assert_refused(
        |d| d["result"] = json!("{{ steps.nope.output }}"),
        "workflow: `result`: `steps.nope` refers to no step",
    );
    assert_refused(
        |d| d["result"] = json!("{% if %}"),
        "workflow: `result`: `{% if %}`: syntax error",
    );
    let mut ok = example();
    ok["result"] = json!("{{ steps.h.output.status }} {{ steps | length }}");
    assert!(parse_value(&ok).is_ok());
}

#[test]
fn timeouts_and_retries_are_bounded() {
    assert_refused(
        |d| d["steps"][1]["timeout"] = json!(0),
        "step `ok`: `timeout` is in milliseconds, 1 to 30000, not 0",
    );
    assert_refused(|d| d["steps"][1]["timeout"] = json!(30_001), "not 30001");
    assert_refused(
        |d| d["steps"][1]["timeout"] = json!("5000"),
        "step `ok`: `timeout` must be a non-negative integer",
    );
    assert_refused(
        |d| d["steps"][1]["timeout"] = json!(1.5),
        "`timeout` must be a non-negative integer",
    );
    assert_refused(
        |d| d["steps"][2]["retries"] = json!(6),
        "step `fmt`: `retries` is 0 to 5, not 6",
    );
    assert_refused(
        |d| d["steps"][2]["retries"] = json!(-1),
        "`retries` must be a non-negative integer",
    );
}

#[test]
fn triggers_are_cron_or_chain_and_known_to_the_node() {
    assert_refused(|d| d["trigger"] = json!("cron"), "trigger: a trigger is");
    assert_refused(|d| d["trigger"] = json!({}), "trigger: a trigger is");
    assert_refused(
        |d| d["trigger"] = json!({"every": 5}),
        "trigger: unknown field `every`",
    );
    assert_refused(
        |d| d["trigger"] = json!({"cron": "* * *"}),
        "trigger: cron \"* * *\" is not known",
    );
    assert_refused(
        |d| d["trigger"] = json!({"cron": "{{ x }}"}),
        "trigger: `cron` is checked when the workflow is defined",
    );
    assert_refused(
        |d| d["trigger"] = json!({"cron": "* * * * * *", "chain": {}}),
        "trigger: give `cron` or `chain`, not both",
    );
    let chain = |body: Value| move |d: &mut Value| d["trigger"] = json!({"chain": body});
    assert_refused(chain(json!(5)), "trigger: `chain` must be an object");
    assert_refused(
        chain(json!({"on": "block"})),
        "trigger: `chain_id` is missing",
    );
    assert_refused(
        chain(json!({"chain_id": 31337})),
        "trigger: `on` is missing",
    );
    assert_refused(
        chain(json!({"chain_id": 1, "on": "block"})),
        "trigger: chain 1 is not known",
    );
    assert_refused(
        chain(json!({"chain_id": 31337, "on": "tx"})),
        "trigger: the event is not known",
    );
    assert_refused(
        chain(json!({"chain_id": 31337, "on": "block", "every": 1})),
        "trigger: unknown field `every`",
    );
    assert_refused(
        chain(json!({"chain_id": 31337, "on": "block", "confirmations": 1u64 << 40})),
        "`confirmations` 1099511627776 is too large",
    );
    let mut ok = example();
    ok["trigger"] = json!({"chain": {"chain_id": 31337, "on": "block", "confirmations": 2}});
    assert_eq!(
        parse_value(&ok).unwrap().trigger,
        Some(WorkflowTrigger::Chain {
            chain_id: 31337,
            on: json!("block"),
            confirmations: 2
        })
    );
    ok["trigger"] = Value::Null;
    assert_eq!(parse_value(&ok).unwrap().trigger, None);
}
