//! `api/openapi.yaml` stays equal to the router: the documented operations are exactly
//! `discovery::ROUTES` (the list the router is built from), every `$ref` resolves,
//! every path parameter is declared, and a live node serves every documented operation.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

const SPEC: &str = include_str!("../api/openapi.yaml");
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

fn spec() -> Value {
    serde_norway::from_str(SPEC).expect("api/openapi.yaml is valid YAML")
}

/// `(METHOD, path)` of every documented operation.
fn documented(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("`paths` is a map");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

fn served() -> BTreeSet<(String, String)> {
    discovery::ROUTES
        .iter()
        .map(|route| (route.method.as_str().to_owned(), route.path.to_owned()))
        .collect()
}

#[test]
fn documented_operations_are_exactly_the_routes_the_router_serves() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.0.3");
    let documented = documented(&spec);
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in api/openapi.yaml: {undocumented:?}; documented but not served: {unserved:?}"
    );
}

fn walk_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => walk_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| walk_refs(v, out)),
        _ => {}
    }
}

/// Follows a local `#/a/b` reference.
fn resolve<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    spec.pointer(pointer)
}

#[test]
fn every_reference_resolves_and_every_path_parameter_is_declared() {
    let spec = spec();
    let mut refs = Vec::new();
    walk_refs(&spec, &mut refs);
    let dangling: Vec<_> = refs
        .iter()
        .filter(|r| resolve(&spec, r).is_none())
        .collect();
    assert!(dangling.is_empty(), "unresolved $ref: {dangling:?}");

    let names_in = |params: Option<&Value>| -> BTreeSet<String> {
        params
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| match p.get("$ref").and_then(Value::as_str) {
                Some(r) => resolve(&spec, r).expect("resolved above"),
                None => p,
            })
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().expect("parameter name").to_owned())
            .collect()
    };
    for (path, item) in spec["paths"].as_object().unwrap() {
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let mut declared = names_in(item.get("parameters"));
            declared.extend(names_in(item[*method].get("parameters")));
            assert_eq!(
                declared, in_template,
                "{method} {path}: path parameters declared vs in the template"
            );
            assert!(
                item[*method]["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
        }
    }
}

/// A value for a path parameter that routes (validity does not matter here).
fn sample(name: &str) -> &'static str {
    match name {
        "service" => "payments",
        "ip" | "repo" => "10.0.0.7",
        other => panic!("no sample value for path parameter {other:?}"),
    }
}

#[test]
fn a_live_node_serves_every_documented_operation() {
    let node = common::Node::start(&[]);
    for (method, path) in documented(&spec()) {
        let concrete: String = path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => sample(name),
                    None => seg,
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{concrete}", node.url);
        let (status, body) = match method.as_str() {
            "POST" => common::http(&method, &url, Some("application/json"), "{}"),
            _ => common::http(&method, &url, None, ""),
        };
        assert_ne!(status, 0, "{method} {path}: no answer");
        assert_ne!(status, 405, "{method} {path}: method not allowed: {body}");
        assert!(
            !(status == 404 && body.contains("no such endpoint")),
            "{method} {path}: not routed: {body}"
        );
    }
}
