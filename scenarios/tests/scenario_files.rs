//! Scenario files: presets parse and print what they printed before they were typed values,
//! unknown keys and bad values are refused with the key named; with `--log-format json`, a
//! scenario that cannot be loaded is reported as one JSON line.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::path::Path;

use scenarios::Scenario;
use scenarios::presets::{DATA, PRESETS, preset};
use scenarios::spec::data_dir;

/// `tests/presets/NAME.toml`: what `fd-scenarios show NAME` printed before presets were typed
/// values (when they were TOML text patched with `replacen`), the data folder written `{data}`.
fn before(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/presets").join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.replace(DATA, &data_dir().display().to_string())
}

fn quickstart() -> String {
    before("quickstart")
}

/// Every preset is the scenario it was as TOML text, field for field: no figure changes because
/// presets became typed values. (The printed text differs in layout only: serde writes inline
/// tables as tables and spells out defaults.)
#[test]
fn every_preset_is_what_its_text_was() {
    for p in PRESETS {
        let typed = preset(p.name, &data_dir()).unwrap();
        let text = Scenario::from_toml(&before(p.name)).unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
        assert_eq!(typed, text, "{}", p.name);
    }
    // …and no fixture is left without its preset.
    let mut fixtures: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/presets"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    fixtures.sort();
    let mut names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    names.sort();
    assert_eq!(fixtures, names);
}

#[test]
fn what_show_prints_parses_back_to_the_preset() {
    for p in PRESETS {
        let s = preset(p.name, &data_dir()).unwrap();
        assert_eq!(&s.name, p.name);
        let again = Scenario::from_toml(&s.to_toml().unwrap()).unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
        assert_eq!(again, s, "{}", p.name);
    }
}

#[test]
fn show_prints_the_preset_as_toml() {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_fd-scenarios")).args(["show", "ablation"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = Scenario::from_toml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(shown, preset("ablation", &data_dir()).unwrap());
}

fn error_of(text: &str) -> String {
    format!("{:#}", Scenario::from_toml(text).unwrap_err())
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = error_of(&quickstart().replace("rounds = 10", "rounds = 10\nroundz = 3"));
    assert!(e.contains("roundz"), "{e}");
    let e = error_of(&quickstart().replace("samples = 250", "samples = 250\ntemprature = 2.0"));
    assert!(e.contains("temprature"), "{e}");
    let e = error_of(&quickstart().replace("label = -1", "label = -1\nlabels_col = 3"));
    assert!(e.contains("labels_col"), "{e}");
    let e = error_of(&quickstart().replace(
        r#"partition = { kind = "dirichlet", alpha = 0.5 }"#,
        r#"partition = { kind = "dirichlet", alfa = 0.5 }"#,
    ));
    assert!(e.contains("alfa"), "{e}");
}

#[test]
fn bad_values_are_refused_with_their_key() {
    let cases = [
        ("rounds = 10", "rounds = 0", "rounds"),
        ("samples = 250", "samples = 5000", "round.samples"),
        ("temperature = 3.0\nencoding", "temperature = -1.0\nencoding", "round.temperature"),
        (r#"encoding = "q8""#, r#"encoding = "q3""#, "round.encoding"),
        ("nodes = 10", "nodes = 0", "split.nodes"),
        ("train = { epochs = 5, learning_rate = 0.003", "train = { epochs = 5, learning_rate = -1.0", "nodes.train"),
        (r#"rule = { kind = "mean" }"#, r#"rule = { kind = "trimmed_mean", trim = 0.7 }"#, "consensus"),
        // Ten nodes × 0.05 trims nothing: the plain mean under a robust rule's name.
        (r#"rule = { kind = "mean" }"#, r#"rule = { kind = "trimmed_mean", trim = 0.05 }"#, "consensus.rule.trim"),
        (r#"rule = { kind = "mean" }"#, r#"rule = { kind = "confidence", max_share = 0.5 }"#, "max_share"),
        ("nodes = 10", "nodes = 2", "round.quorum"),
    ];
    for (from, to, key) in cases {
        let text = quickstart().replacen(from, to, 1);
        assert_ne!(text, quickstart(), "pattern {from} not found");
        let e = error_of(&text);
        assert!(e.contains(key), "{key}: {e}");
    }
    let e = error_of(&format!("{}\n[[faults]]\nnode = 12\n", quickstart()));
    assert!(e.contains("faults") && e.contains("12"), "{e}");
    let e = error_of(&quickstart().replace(r#"kind = "mlp", hidden = [128]"#, r#"kind = "rnn", hidden = [128]"#));
    assert!(e.contains("rnn"), "{e}");
}

#[test]
fn with_json_logs_a_failure_is_one_json_line_on_stderr() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fd-scenarios"))
        .args(["--log-format", "json", "run", "no-such-preset-or-file"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(lines[0]["fields"]["error"].as_str().is_some_and(|e| e.contains("no-such-preset-or-file")), "{stderr}");
}

#[test]
fn a_reader_that_has_gone_is_not_an_error() {
    // `fd-scenarios show NAME | head -3`: the reading end closes first. Closing it before the
    // process starts makes every write meet a closed pipe, whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [&["show", "mnist-dirichlet"][..], &["list"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fd-scenarios"))
            .args(args)
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
}
