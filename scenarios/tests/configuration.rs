//! `docs/configuration.md` cannot drift from the config types: the keys it documents (the first
//! column of its tables, a dotted path under `## federation.toml`, `## node.toml` and
//! `## scenario files`) must be exactly the keys that `AggregatorConfig`, `NodeConfig` and
//! `Scenario` accept.
//!
//! The accepted keys are read from the types themselves, through serde: every config table
//! denies unknown fields, so deserialising a table that holds one unknown key fails with serde's
//! "unknown field `…`, expected one of …" and the list of the table's fields. Each field is then
//! probed in turn with a table of its own: a struct answers with its fields, an internally tagged
//! enum asks for its tag and then names its variants (each probed for its fields), an array of
//! tables is probed through one element, and anything else is a leaf. A table that accepts an
//! unknown key is reported, since neither the docs nor a user's typo could be checked there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

const PROBE: &str = "__probe";

/// What deserialising `T` from `doc` says.
fn error_of<T: DeserializeOwned>(doc: &Table) -> Option<String> {
    let text = toml::to_string(doc).unwrap();
    toml::from_str::<T>(&text).err().map(|e| e.message().to_string())
}

/// The backticked names after `expected` in a serde message (`` `a` ``, `` `a` or `b` ``,
/// `` one of `a`, `b` ``).
fn expected_names(message: &str) -> Option<Vec<String>> {
    let tail = message.split_once(", expected ")?.1;
    Some(tail.split('`').skip(1).step_by(2).map(str::to_string).collect())
}

/// `doc` with `value` put at `path` (tables made on the way; an array step is `[]`, one element).
fn with_at(path: &[String], value: Value) -> Table {
    fn put(path: &[String], value: Value) -> Value {
        match path.split_first() {
            None => value,
            Some((step, rest)) if step == "[]" => Value::Array(vec![put(rest, value)]),
            Some((step, rest)) => {
                let mut t = Table::new();
                t.insert(step.clone(), put(rest, value));
                Value::Table(t)
            }
        }
    }
    match put(path, value) {
        Value::Table(t) => t,
        other => panic!("a document's root must be a table, not {other}"),
    }
}

fn probe_table(extra: &[(&str, &str)]) -> Value {
    let mut t = Table::new();
    for (k, v) in extra {
        t.insert(k.to_string(), Value::String(v.to_string()));
    }
    t.insert(PROBE.to_string(), Value::Integer(1));
    Value::Table(t)
}

/// The dotted key (array steps dropped) of `path`.
fn dotted(path: &[String]) -> String {
    path.iter().filter(|s| *s != "[]").cloned().collect::<Vec<_>>().join(".")
}

/// Every key path `T` accepts under `path`, into `keys`; tables that accept anything into `open`.
/// `siblings` are the fields of the table that holds `path`: a probe that the field accepts
/// whole (a free-form table, such as an ablation's `set`) makes that table ask for one of them.
fn walk<T: DeserializeOwned>(
    path: &[String],
    siblings: &[String],
    keys: &mut BTreeSet<String>,
    open: &mut Vec<String>,
) {
    let Some(message) = error_of::<T>(&with_at(path, probe_table(&[]))) else {
        open.push(dotted(path));
        return;
    };
    let missing = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`'));
    if message.starts_with(&format!("unknown field `{PROBE}`")) {
        let fields = expected_names(&message).unwrap_or_default();
        for field in &fields {
            let mut sub = path.to_vec();
            sub.push(field.clone());
            keys.insert(dotted(&sub));
            walk::<T>(&sub, &fields, keys, open);
        }
    } else if missing.is_some_and(|m| siblings.iter().any(|s| s == m)) {
        // The field took the probe as it is: a free-form table of values, a leaf.
    } else if let Some(tag) = missing {
        // An internally tagged enum: its tag, its variants, and each variant's fields.
        let tag = tag.to_string();
        let mut tag_path = path.to_vec();
        tag_path.push(tag.clone());
        keys.insert(dotted(&tag_path));
        let mut t = Table::new();
        t.insert(tag.clone(), Value::String(PROBE.into()));
        let Some(message) = error_of::<T>(&with_at(path, Value::Table(t))) else {
            open.push(dotted(path));
            return;
        };
        let Some(variants) = message.strip_prefix(&format!("unknown variant `{PROBE}`")).and(expected_names(&message))
        else {
            // Not a tagged enum: a table that ignores unknown keys and asks for a required one.
            open.push(format!("{} ({message})", dotted(path)));
            return;
        };
        for variant in variants {
            let Some(message) = error_of::<T>(&with_at(path, probe_table(&[(&tag, &variant)]))) else {
                open.push(format!("{} (kind {variant})", dotted(path)));
                continue;
            };
            if message.starts_with(&format!("unknown field `{PROBE}`")) {
                for field in expected_names(&message).unwrap_or_default().into_iter().filter(|f| *f != tag) {
                    let mut sub = path.to_vec();
                    sub.push(field);
                    keys.insert(dotted(&sub));
                    walk_variant::<T>(&sub, &tag, &variant, keys, open);
                }
            }
        }
    } else if message.contains("expected a sequence") || message.contains("expected a tuple") {
        let mut element = path.to_vec();
        element.push("[]".into());
        let element_message = error_of::<T>(&with_at(&element, probe_table(&[])));
        if element_message.is_some_and(|m| m.starts_with(&format!("unknown field `{PROBE}`"))) {
            walk::<T>(&element, &[], keys, open);
        }
    }
    // Anything else (a number, a string, an enum of strings, a map of values): a leaf.
}

/// Like `walk`, for a field of one variant of an internally tagged enum at `path`'s parent: the
/// probe must carry the variant's tag beside it.
fn walk_variant<T: DeserializeOwned>(
    path: &[String],
    tag: &str,
    variant: &str,
    keys: &mut BTreeSet<String>,
    _open: &mut [String],
) {
    let (field, parent) = path.split_last().unwrap();
    let mut t = Table::new();
    t.insert(tag.to_string(), Value::String(variant.to_string()));
    t.insert(field.clone(), probe_table(&[]));
    let Some(message) = error_of::<T>(&with_at(parent, Value::Table(t))) else { return };
    if message.starts_with(&format!("unknown field `{PROBE}`")) {
        for sub_field in expected_names(&message).unwrap_or_default() {
            let mut sub = path.to_vec();
            sub.push(sub_field);
            keys.insert(dotted(&sub));
        }
    }
}

/// The keys `T` accepts, and the tables that accept any key.
fn accepted<T: DeserializeOwned>() -> (BTreeSet<String>, Vec<String>) {
    let (mut keys, mut open) = (BTreeSet::new(), Vec::new());
    walk::<T>(&[], &[], &mut keys, &mut open);
    (keys, open)
}

/// The keys documented under `## {section}` of configuration.md.
fn documented(doc: &str, section: &str) -> BTreeSet<String> {
    let heading = format!("## {section}");
    let mut inside = false;
    let mut keys = BTreeSet::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == heading;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(cell) = line.strip_prefix("| `")
            && let Some((key, _)) = cell.split_once('`')
        {
            keys.insert(key.to_string());
        }
    }
    assert!(!keys.is_empty(), "docs/configuration.md has no `{heading}` section with key tables");
    keys
}

fn compare(section: &str, documented: &BTreeSet<String>, (accepted, open): (BTreeSet<String>, Vec<String>)) {
    let missing: Vec<_> = accepted.difference(documented).collect();
    let stale: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty() && stale.is_empty() && open.is_empty(),
        "docs/configuration.md, {section}:\n  accepted by the config types but not documented: {missing:?}\n  \
         documented but not accepted: {stale:?}\n  tables that accept any key (deny_unknown_fields missing?): {open:?}"
    );
}

fn configuration_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn federation_toml_keys_are_the_documented_ones() {
    let doc = configuration_md();
    compare("federation.toml", &documented(&doc, "federation.toml"), accepted::<aggregator::AggregatorConfig>());
}

#[test]
fn node_toml_keys_are_the_documented_ones() {
    let doc = configuration_md();
    compare("node.toml", &documented(&doc, "node.toml"), accepted::<node::NodeConfig>());
}

#[test]
fn scenario_file_keys_are_the_documented_ones() {
    let doc = configuration_md();
    compare("scenario files", &documented(&doc, "scenario files"), accepted::<scenarios::spec::Scenario>());
}

#[test]
fn the_probe_finds_a_removed_key() {
    // The check itself can fail: a documented key that a type no longer has is reported.
    let doc = configuration_md();
    let mut keys = documented(&doc, "federation.toml");
    keys.insert("round.no_such_key".into());
    let result =
        std::panic::catch_unwind(|| compare("federation.toml", &keys, accepted::<aggregator::AggregatorConfig>()));
    assert!(result.is_err(), "a documented key that no type accepts went unnoticed");
    let mut keys = documented(&doc, "federation.toml");
    assert!(keys.remove("round.samples"), "round.samples is documented");
    let result =
        std::panic::catch_unwind(|| compare("federation.toml", &keys, accepted::<aggregator::AggregatorConfig>()));
    assert!(result.is_err(), "an accepted key missing from the docs went unnoticed");
}
