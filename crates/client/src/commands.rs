//! The commands on registered components: register, run, call, sched,
//! unsched, ls, show, rm. Each is one or two requests to the node.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use super::args::{
    CallArgs, ClientCommand, NameArg, NodeArgs, RegisterArgs, RunArgs, SchedArgs, UnschedArgs,
};
use super::table::{self, Table};
use super::transport::{Node, Reply};
use super::{emit, emit_line, encode, jobs, json_or_string, read_file, runs, ClientError};

const JSON: &str = "application/json";

pub async fn dispatch(command: ClientCommand, token: Option<String>) -> Result<(), ClientError> {
    let open = |node: &NodeArgs| Node::new(&node.url, token.clone());
    match command {
        ClientCommand::Register(c) => register(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Run(c) => run(&open(&c.node)?, &c.args).await,
        ClientCommand::Call(c) => call(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Sched(c) => sched(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Unsched(c) => unsched(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Ls(c) => ls(&open(&c.node)?, c.node.json).await,
        ClientCommand::Show(c) => show(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Runs(c) => runs::runs(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Rm(c) => rm(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Job(c) => jobs::job(&open(&c.node)?, c.node.json, &c.args).await,
        ClientCommand::Workflow(c) => {
            jobs::workflow(&open(&c.node)?, c.node.json, c.args.action).await
        }
    }
}

/// With `--json`, the node's answer as it is (a 204 has none).
fn print_raw(reply: &Reply) {
    if !reply.body.is_empty() {
        emit_line(&String::from_utf8_lossy(&reply.body));
    }
}

async fn register(node: &Node, json: bool, args: &RegisterArgs) -> Result<(), ClientError> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.file)?,
    };
    let mut query = format!("name={}", encode(&name));
    for pair in &args.envs {
        query.push_str(&format!("&env={}", encode(pair)));
    }
    // The node takes the hosts as one comma-separated list.
    if !args.allows.is_empty() {
        query.push_str(&format!("&allow={}", encode(&args.allows.join(","))));
    }
    if let Some(reuse) = args.reuse {
        query.push_str(&format!("&reuse={reuse}"));
    }
    for pair in &args.links {
        query.push_str(&format!("&link={}", encode(pair)));
    }
    let bytes = read_file(&args.file)?;
    let reply = node
        .post(&format!("/register?{query}"), "application/wasm", bytes)
        .await?;
    if json {
        print_raw(&reply);
        return Ok(());
    }
    let info = reply.json()?;
    emit(&format!("registered {}\n", table::text(&info["name"])));
    emit(&describe(&info));
    Ok(())
}

/// The name a file is registered under without `--name`: `echo.wasm` →
/// `echo`. The node checks it.
fn default_name(file: &Path) -> Result<String, ClientError> {
    file.file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_lowercase)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "cannot name a component after {}: give --name",
                file.display()
            ))
        })
}

async fn run(node: &Node, args: &RunArgs) -> Result<(), ClientError> {
    let input = match args.input.as_deref() {
        None => Vec::new(),
        Some("-") => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .map_err(|e| ClientError::Usage(format!("cannot read stdin: {e}")))?;
            input
        }
        Some(text) => text.as_bytes().to_vec(),
    };
    let reply = node
        .post(
            &format!("/run/{}", encode(&args.name)),
            "text/plain; charset=utf-8",
            input,
        )
        .await?;
    // The output is the handler's, often JSON already: as it is, `--json`
    // or not.
    emit_line(&String::from_utf8_lossy(&reply.body));
    Ok(())
}

async fn call(node: &Node, json: bool, args: &CallArgs) -> Result<(), ClientError> {
    let arguments: Vec<Value> = args.args.iter().map(|a| json_or_string(a)).collect();
    let reply = node
        .post(
            &format!("/call/{}/{}", encode(&args.name), encode(&args.function)),
            JSON,
            Value::from(arguments).to_string(),
        )
        .await?;
    if json {
        print_raw(&reply);
        return Ok(());
    }
    let answer = reply.json()?;
    // A component answers `{"result": …}`, a core module `{"results": […]}`.
    let result = match answer.get("result") {
        Some(result) => result,
        None => answer.get("results").unwrap_or(&answer),
    };
    emit_line(&table::block(result));
    Ok(())
}

async fn sched(node: &Node, json: bool, args: &SchedArgs) -> Result<(), ClientError> {
    let mut body = json!({ "name": args.name, "cron": args.cron });
    if let Some(input) = &args.input {
        body["input"] = Value::String(input.clone());
    }
    let reply = node.post("/sched", JSON, body.to_string()).await?;
    if json {
        print_raw(&reply);
        return Ok(());
    }
    let schedule = reply.json()?;
    emit(&schedules_table(std::slice::from_ref(&schedule)).render());
    Ok(())
}

async fn unsched(node: &Node, json: bool, args: &UnschedArgs) -> Result<(), ClientError> {
    let reply = node.delete(&format!("/sched/{}", encode(&args.id))).await?;
    if json {
        print_raw(&reply);
    } else {
        emit(&format!("removed schedule {}\n", args.id));
    }
    Ok(())
}

async fn ls(node: &Node, json: bool) -> Result<(), ClientError> {
    let reply = node.get("/handlers").await?;
    if json {
        print_raw(&reply);
        return Ok(());
    }
    let list = reply.json()?;
    let mut table = Table::new(&["NAME", "KIND", "SIZE", "LOADED", "EXPORTS"]);
    for info in list.as_array().into_iter().flatten() {
        table.row(vec![
            table::text(&info["name"]),
            table::text(&info["kind"]),
            table::size(&info["size"]),
            table::time(&info["loaded_at"]),
            export_names(info),
        ]);
    }
    if table.is_empty() {
        emit("no components registered\n");
    } else {
        emit(&table.render());
    }
    Ok(())
}

async fn show(node: &Node, json: bool, args: &NameArg) -> Result<(), ClientError> {
    let reply = node
        .get(&format!("/handlers/{}", encode(&args.name)))
        .await?;
    if json {
        print_raw(&reply);
        return Ok(());
    }
    let info = reply.json()?;
    let mut text = describe(&info);
    let all = node.get("/sched").await?.json()?;
    let mine: Vec<Value> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == info["name"])
        .cloned()
        .collect();
    if !mine.is_empty() {
        text.push_str("schedules:\n");
        for line in schedules_table(&mine).render().lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    emit(&text);
    Ok(())
}

async fn rm(node: &Node, json: bool, args: &NameArg) -> Result<(), ClientError> {
    let reply = node
        .delete(&format!("/handlers/{}", encode(&args.name)))
        .await?;
    if json {
        print_raw(&reply);
    } else {
        emit(&format!("removed {}\n", args.name));
    }
    Ok(())
}

/// A registered component, one `key: value` per line, exports last.
fn describe(info: &Value) -> String {
    let mut lines = vec![
        ("name", table::text(&info["name"])),
        ("kind", table::text(&info["kind"])),
        ("size", table::size(&info["size"])),
        ("sha256", table::text(&info["digest"])),
        ("loaded", table::time(&info["loaded_at"])),
        ("reuse", table::text(&info["reuse"])),
    ];
    let keys = strings(&info["config_keys"]);
    if !keys.is_empty() {
        lines.push(("config", keys.join(", ")));
    }
    if let Some(allow) = info["allow_outbound"].as_array() {
        lines.push(("allow", strings(&Value::from(allow.clone())).join(", ")));
    }
    let links: Vec<String> = info["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} = {}",
                table::text(&l["interface"]),
                table::text(&l["provider"])
            )
        })
        .collect();
    if !links.is_empty() {
        lines.push(("links", links.join(", ")));
    }
    let mut text: String = lines
        .into_iter()
        .map(|(key, value)| format!("{:<8}{value}\n", format!("{key}:")))
        .collect();
    let exports: Vec<&Value> = info["exports"].as_array().into_iter().flatten().collect();
    if !exports.is_empty() {
        text.push_str("exports:\n");
        for export in exports {
            text.push_str(&format!("  {}\n", table::text(&export["signature"])));
        }
    }
    text
}

fn schedules_table(schedules: &[Value]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "CRON", "NEXT", "INPUT"]);
    for s in schedules {
        table.row(vec![
            table::text(&s["id"]),
            table::text(&s["name"]),
            table::text(&s["cron"]),
            table::time(&s["next"]),
            table::text(&s["input"]),
        ]);
    }
    table
}

/// The export names of a component, for a column.
fn export_names(info: &Value) -> String {
    info["exports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| table::text(&e["name"]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(table::text)
        .collect()
}
