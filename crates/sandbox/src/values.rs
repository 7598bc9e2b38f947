//! Component values as JSON: the conversions behind `/call/NAME/FUNC`, and
//! WIT signatures to show in errors and in a component's export list.
//!
//! Arguments are converted by the parameter types the component declares,
//! so clients write plain JSON (`2`, `"text"`, `{"x": 1}`) and never tag
//! types. Results carry their own shape (`Val`), so no type is needed there.

use serde_json::{Map, Number, Value};
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, Val};

/// Most values (arrays, objects and scalars together) in the JSON arguments
/// of one call, and their deepest nesting: checked before anything is
/// parsed, so that a large body costs its bytes, not a tree many times their
/// size.
pub const MAX_ARG_VALUES: usize = 65_536;
pub const MAX_ARG_DEPTH: usize = 64;

/// Parses the JSON array of a call's arguments, refusing past
/// [`MAX_ARG_VALUES`] or [`MAX_ARG_DEPTH`] without building anything.
pub fn parse_args(args: &str) -> Result<Vec<Value>, String> {
    // A count of every place a value may start: each `[` or `{`, and one
    // more per `,` and per container (its first element). An upper bound,
    // found without allocating.
    let (mut values, mut depth, mut deepest) = (1usize, 0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in args.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                values += 1;
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => values += 1,
            _ => {}
        }
    }
    if deepest > MAX_ARG_DEPTH {
        return Err(format!(
            "the arguments nest deeper than {MAX_ARG_DEPTH} levels"
        ));
    }
    if values > MAX_ARG_VALUES {
        return Err(format!(
            "the arguments hold more than {MAX_ARG_VALUES} values"
        ));
    }
    serde_json::from_str(args).map_err(|e| format!("the arguments must be a JSON array ({e})"))
}

/// A function a component exports: its name as a client writes it and its
/// WIT signature.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportInfo {
    pub name: String,
    pub signature: String,
}

/// Every function `component` exports, top-level ones as `func` and those of
/// exported interfaces as `interface.func`, in the component's order.
pub fn exports(component: &Component) -> Vec<ExportInfo> {
    let engine = component.engine();
    let mut found = Vec::new();
    for (name, item) in component.component_type().exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => found.push(ExportInfo {
                name: name.to_string(),
                signature: signature(name, &func),
            }),
            ComponentItem::ComponentInstance(instance) => {
                for (func_name, item) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = item.ty {
                        found.push(ExportInfo {
                            name: format!("{name}.{func_name}"),
                            signature: signature(func_name, &func),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// `name(a: u32, b: string) -> list<string>`, as WIT writes it.
pub fn signature(name: &str, func: &ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(param, ty)| format!("{param}: {}", type_name(&ty)))
        .collect();
    let results: Vec<String> = func.results().map(|ty| type_name(&ty)).collect();
    // An async function (the component model's async ABI) is called like
    // any other; its signature says what it is.
    let name = if func.async_() {
        format!("async {name}")
    } else {
        name.to_string()
    };
    match results.as_slice() {
        [] => format!("{name}({})", params.join(", ")),
        [one] => format!("{name}({}) -> {one}", params.join(", ")),
        many => format!("{name}({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

/// A type as WIT writes it. Records, variants, enums and flags are
/// structural here (the component model keeps no type names), so they are
/// spelled out: `record { x: u32 }`.
pub fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", type_name(&list.ty())),
        Type::FixedLengthList(list) => format!("list<{}, {}>", type_name(&list.ty()), list.len()),
        Type::Map(map) => format!(
            "map<{}, {}>",
            type_name(&map.key()),
            type_name(&map.value())
        ),
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|f| format!("{}: {}", f.name, type_name(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| type_name(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(variant) => {
            let cases: Vec<String> = variant
                .cases()
                .map(|c| match c.ty {
                    Some(ty) => format!("{}({})", c.name, type_name(&ty)),
                    None => c.name.to_string(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Option(option) => format!("option<{}>", type_name(&option.ty())),
        Type::Result(result) => match (result.ok(), result.err()) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", type_name(&ok)),
            (None, Some(err)) => format!("result<_, {}>", type_name(&err)),
            (Some(ok), Some(err)) => format!("result<{}, {}>", type_name(&ok), type_name(&err)),
        },
        Type::Flags(flags) => format!(
            "flags {{ {} }}",
            flags.names().collect::<Vec<_>>().join(", ")
        ),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// Why a JSON value does not fit a type: where, and what was expected.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{path}: expected {expected}, got {got}")]
pub struct Mismatch {
    pub path: String,
    pub expected: String,
    pub got: String,
}

/// Converts JSON arguments to the parameters of `func`.
pub fn args_from_json(func: &ComponentFunc, args: &[Value]) -> Result<Vec<Val>, String> {
    if args.len() != func.params().len() {
        return Err(format!(
            "takes {} argument{}, got {}",
            func.params().len(),
            if func.params().len() == 1 { "" } else { "s" },
            args.len()
        ));
    }
    func.params()
        .zip(args)
        .map(|((name, ty), arg)| from_json(&ty, arg, name).map_err(|e| e.to_string()))
        .collect()
}

/// Converts `value` to a value of type `ty`; `path` names it in errors.
pub fn from_json(ty: &Type, value: &Value, path: &str) -> Result<Val, Mismatch> {
    let mismatch = || Mismatch {
        path: path.to_string(),
        expected: type_name(ty),
        got: describe(value),
    };
    let int = |value: &Value| -> Option<i128> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            _ => None,
        }
    };
    macro_rules! integer {
        ($variant:ident, $t:ty) => {
            int(value)
                .and_then(|n| <$t>::try_from(n).ok())
                .map(Val::$variant)
                .ok_or_else(mismatch)
        };
    }
    match ty {
        Type::Bool => value.as_bool().map(Val::Bool).ok_or_else(mismatch),
        Type::S8 => integer!(S8, i8),
        Type::U8 => integer!(U8, u8),
        Type::S16 => integer!(S16, i16),
        Type::U16 => integer!(U16, u16),
        Type::S32 => integer!(S32, i32),
        Type::U32 => integer!(U32, u32),
        Type::S64 => integer!(S64, i64),
        Type::U64 => integer!(U64, u64),
        Type::Float32 => value
            .as_f64()
            .map(|f| Val::Float32(f as f32))
            .ok_or_else(mismatch),
        Type::Float64 => value.as_f64().map(Val::Float64).ok_or_else(mismatch),
        Type::Char => {
            let text = value.as_str().ok_or_else(mismatch)?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(Val::Char(c)),
                _ => Err(mismatch()),
            }
        }
        Type::String => value
            .as_str()
            .map(|s| Val::String(s.to_string()))
            .ok_or_else(mismatch),
        Type::List(list) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            elements(&list.ty(), items, path).map(Val::List)
        }
        Type::FixedLengthList(list) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            if items.len() != list.len() as usize {
                return Err(mismatch());
            }
            elements(&list.ty(), items, path).map(Val::FixedLengthList)
        }
        Type::Tuple(tuple) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            if items.len() != tuple.types().len() {
                return Err(mismatch());
            }
            tuple
                .types()
                .zip(items)
                .enumerate()
                .map(|(i, (ty, item))| from_json(&ty, item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Val::Tuple)
        }
        Type::Record(record) => {
            let Value::Object(object) = value else {
                return Err(mismatch());
            };
            if let Some(unknown) = object
                .keys()
                .find(|k| !record.fields().any(|f| f.name == k.as_str()))
            {
                return Err(Mismatch {
                    path: format!("{path}.{unknown}"),
                    expected: format!("a field of {}", type_name(ty)),
                    got: "an unknown field".into(),
                });
            }
            record
                .fields()
                .map(|field| {
                    let field_path = format!("{path}.{}", field.name);
                    // A missing optional field is `none`.
                    let value = match (object.get(field.name), &field.ty) {
                        (Some(v), _) => from_json(&field.ty, v, &field_path)?,
                        (None, Type::Option(_)) => Val::Option(None),
                        (None, _) => {
                            return Err(Mismatch {
                                path: field_path,
                                expected: type_name(&field.ty),
                                got: "nothing (the field is missing)".into(),
                            })
                        }
                    };
                    Ok((field.name.to_string(), value))
                })
                .collect::<Result<_, _>>()
                .map(Val::Record)
        }
        Type::Variant(variant) => {
            // `"case"` for a case without payload, `{"case": payload}`.
            let (case, payload) = tagged(value).ok_or_else(mismatch)?;
            let known = variant
                .cases()
                .find(|c| c.name == case)
                .ok_or_else(mismatch)?;
            let payload = case_payload(known.ty, payload, path, case).ok_or_else(mismatch)??;
            Ok(Val::Variant(case.to_string(), payload))
        }
        Type::Enum(e) => {
            let name = value.as_str().ok_or_else(mismatch)?;
            if e.names().any(|n| n == name) {
                Ok(Val::Enum(name.to_string()))
            } else {
                Err(mismatch())
            }
        }
        Type::Option(option) => match value {
            Value::Null => Ok(Val::Option(None)),
            some => Ok(Val::Option(Some(Box::new(from_json(
                &option.ty(),
                some,
                path,
            )?)))),
        },
        Type::Result(result) => {
            let (case, payload) = tagged(value).ok_or_else(mismatch)?;
            let ty = match case {
                "ok" => result.ok(),
                "err" => result.err(),
                _ => return Err(mismatch()),
            };
            let payload = case_payload(ty, payload, path, case).ok_or_else(mismatch)??;
            Ok(Val::Result(if case == "ok" {
                Ok(payload)
            } else {
                Err(payload)
            }))
        }
        Type::Flags(flags) => {
            let items = value.as_array().ok_or_else(mismatch)?;
            items
                .iter()
                .map(|item| match item.as_str() {
                    Some(name) if flags.names().any(|n| n == name) => Ok(name.to_string()),
                    _ => Err(mismatch()),
                })
                .collect::<Result<_, _>>()
                .map(Val::Flags)
        }
        Type::Map(map) => {
            // An object when the keys are strings, else `[[key, value], ...]`.
            let pairs: Vec<(Value, Value)> = match (value, map.key()) {
                (Value::Object(object), Type::String) => object
                    .iter()
                    .map(|(k, v)| (Value::String(k.clone()), v.clone()))
                    .collect(),
                (Value::Array(items), _) => items
                    .iter()
                    .map(|pair| match pair {
                        Value::Array(kv) if kv.len() == 2 => Ok((kv[0].clone(), kv[1].clone())),
                        _ => Err(mismatch()),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(mismatch()),
            };
            pairs
                .iter()
                .map(|(k, v)| {
                    Ok((
                        from_json(&map.key(), k, &format!("{path} key"))?,
                        from_json(&map.value(), v, &format!("{path}[{k}]"))?,
                    ))
                })
                .collect::<Result<_, _>>()
                .map(Val::Map)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            Err(Mismatch {
                path: path.to_string(),
                expected: format!("{} (which JSON cannot give)", type_name(ty)),
                got: describe(value),
            })
        }
    }
}

/// The elements of a list, each of type `element`.
fn elements(element: &Type, items: &[Value], path: &str) -> Result<Vec<Val>, Mismatch> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| from_json(element, item, &format!("{path}[{i}]")))
        .collect()
}

/// The payload of case `case` of a variant or a result, whose payload type
/// is `ty`: none for a case without one (given nothing or `null`), read from
/// the JSON at `PATH.case` for a case with one. `None` when the JSON's
/// payload does not fit the case (one given where there is none, or the
/// reverse): the caller's whole value is then the mismatch.
fn case_payload(
    ty: Option<Type>,
    payload: Option<&Value>,
    path: &str,
    case: &str,
) -> Option<Result<Option<Box<Val>>, Mismatch>> {
    match (ty, payload) {
        (None, None) | (None, Some(Value::Null)) => Some(Ok(None)),
        (Some(ty), Some(payload)) => {
            Some(from_json(&ty, payload, &format!("{path}.{case}")).map(|v| Some(Box::new(v))))
        }
        _ => None,
    }
}

/// `"name"` or `{"name": payload}`, the JSON of a variant case.
fn tagged(value: &Value) -> Option<(&str, Option<&Value>)> {
    match value {
        Value::String(name) => Some((name.as_str(), None)),
        Value::Object(object) if object.len() == 1 => {
            let (name, payload) = object.iter().next()?;
            Some((name.as_str(), Some(payload)))
        }
        _ => None,
    }
}

/// What a JSON value is, for error messages.
fn describe(value: &Value) -> String {
    let text = value.to_string();
    let shown = if text.len() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if matches!(value, Value::Null) {
        kind.to_string()
    } else {
        format!("{kind} ({shown})")
    }
}

/// Converts a component value to JSON. Fails only for values JSON cannot
/// hold: resources, futures and streams, and non-finite floats.
pub fn to_json(value: &Val) -> Result<Value, String> {
    let float = |f: f64| {
        Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} has no JSON form"))
    };
    let boxed = |v: &Option<Box<Val>>| match v {
        Some(v) => to_json(v),
        None => Ok(Value::Null),
    };
    Ok(match value {
        Val::Bool(b) => Value::Bool(*b),
        Val::S8(n) => (*n).into(),
        Val::U8(n) => (*n).into(),
        Val::S16(n) => (*n).into(),
        Val::U16(n) => (*n).into(),
        Val::S32(n) => (*n).into(),
        Val::U32(n) => (*n).into(),
        Val::S64(n) => (*n).into(),
        Val::U64(n) => (*n).into(),
        Val::Float32(f) => float(f64::from(*f))?,
        Val::Float64(f) => float(*f)?,
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Val::Map(pairs) => {
            if pairs.iter().all(|(k, _)| matches!(k, Val::String(_))) {
                let mut object = Map::new();
                for (k, v) in pairs {
                    if let Val::String(k) = k {
                        object.insert(k.clone(), to_json(v)?);
                    }
                }
                Value::Object(object)
            } else {
                Value::Array(
                    pairs
                        .iter()
                        .map(|(k, v)| Ok(Value::Array(vec![to_json(k)?, to_json(v)?])))
                        .collect::<Result<_, String>>()?,
                )
            }
        }
        Val::Record(fields) => {
            let mut object = Map::new();
            for (name, v) in fields {
                object.insert(name.clone(), to_json(v)?);
            }
            Value::Object(object)
        }
        Val::Variant(case, None) => Value::String(case.clone()),
        Val::Variant(case, Some(payload)) => {
            let mut object = Map::new();
            object.insert(case.clone(), to_json(payload)?);
            Value::Object(object)
        }
        Val::Enum(case) => Value::String(case.clone()),
        Val::Option(None) => Value::Null,
        Val::Option(Some(v)) => to_json(v)?,
        Val::Result(Ok(v)) => serde_json::json!({ "ok": boxed(v)? }),
        Val::Result(Err(v)) => serde_json::json!({ "err": boxed(v)? }),
        Val::Flags(names) => Value::Array(names.iter().cloned().map(Value::String).collect()),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            return Err("the result holds a resource, future or stream, which JSON cannot".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_become_plain_json() {
        let record = Val::Record(vec![
            ("name".into(), Val::String("x".into())),
            ("size".into(), Val::U32(3)),
            ("tag".into(), Val::Option(None)),
        ]);
        assert_eq!(
            to_json(&record),
            Ok(json!({"name": "x", "size": 3, "tag": null}))
        );
        assert_eq!(
            to_json(&Val::Result(Ok(Some(Box::new(Val::S64(-2)))))),
            Ok(json!({"ok": -2}))
        );
        assert_eq!(to_json(&Val::Result(Err(None))), Ok(json!({"err": null})));
        assert_eq!(
            to_json(&Val::Variant(
                "circle".into(),
                Some(Box::new(Val::Float64(1.5)))
            )),
            Ok(json!({"circle": 1.5}))
        );
        assert_eq!(
            to_json(&Val::Variant("none".into(), None)),
            Ok(json!("none"))
        );
        assert_eq!(
            to_json(&Val::Flags(vec!["read".into(), "write".into()])),
            Ok(json!(["read", "write"]))
        );
        assert_eq!(
            to_json(&Val::Tuple(vec![Val::Char('é'), Val::Bool(true)])),
            Ok(json!(["é", true]))
        );
        assert!(to_json(&Val::Float64(f64::NAN)).is_err());
    }
}
