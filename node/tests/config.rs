//! A wrong node config fails at start with an error that names the field, whether it is built in
//! code or read from a TOML file; the base config the wrong ones are made from is accepted.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use std::time::Duration;

use learning::Architecture;
use learning::data::{DataFormat, DataSpec, Preprocess};
use node::policy::QueryPolicy;
use node::{Error as NodeError, NodeConfig};
use tokio_util::sync::CancellationToken;

fn base(dir: &std::path::Path) -> NodeConfig {
    let key = dir.join("node.key");
    if !key.exists() {
        net::keys::generate(&key).unwrap();
    }
    let agg = protocol::Identity::from_seed([5; 32]).unwrap().id();
    NodeConfig {
        federation: protocol::FederationId::new("f").unwrap(),
        key,
        aggregator: format!("/ip4/127.0.0.1/tcp/9/p2p/{}", net::keys::peer_id_string(&agg)).parse().unwrap(),
        listen: Vec::new(),
        hole_punching: false,
        state_dir: dir.join("state"),
        reference: dir.join("ref.fdref"),
        seed: 1,
        backend: Default::default(),
        data: DataSpec {
            format: DataFormat::Csv,
            path: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/digits/digits.csv.gz")),
            label: None,
            skip_lines: 0,
            header: false,
            delimiter: ',',
            images: None,
            labels: None,
            rows: None,
            classes: None,
            preprocess: Preprocess::Scale { factor: 1.0 / 16.0 },
        },
        model: Architecture::Mlp { hidden: vec![8], dropout: 0.0 },
        train: Default::default(),
        digest: Default::default(),
        abstain: None,
        privacy: None,
        policy: QueryPolicy::pinned(protocol::ReferenceSetId([3; 32])),
        ledger: Default::default(),
        padding: None,
        metrics: None,
        http: Default::default(),
    }
}

/// How long a node may take to refuse a bad config. One that it accepts instead tries to reach
/// the aggregator for ever: the test fails at this bound rather than hang.
const REFUSAL_BOUND: Duration = Duration::from_secs(30);

/// Runs the node on `cfg` and returns the field and detail of the config error it stops with.
async fn refused(cfg: NodeConfig) -> (String, String) {
    match tokio::time::timeout(REFUSAL_BOUND, node::run(cfg, CancellationToken::new())).await {
        Ok(Err(NodeError::Config { field, detail })) => (field, detail),
        Ok(Err(e)) => panic!("not a config error: {e}"),
        Ok(Ok(summary)) => panic!("accepted a bad config and stopped: {summary:?}"),
        Err(_) => panic!("accepted a bad config: the node was still running after {REFUSAL_BOUND:?}"),
    }
}

/// A fresh folder for a test's files, removed when the test ends (also when it fails).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("node-{name}-")).tempdir().unwrap()
}

/// The control for the refusals below: the base config is accepted. The node gets as far as
/// its network (the egress ledger is opened), then stops cleanly when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_config_is_accepted() {
    let tmp = temp_dir("cfg-ok");
    let dir = tmp.path();
    let ok = base(dir);
    let ledger = ok.state_dir.join("egress.jsonl");
    let shutdown = CancellationToken::new();
    let node = tokio::spawn(node::run(ok, shutdown.clone()));
    let start = std::time::Instant::now();
    while !ledger.exists() {
        assert!(!node.is_finished(), "the node stopped on a good config: {:?}", node.await);
        assert!(start.elapsed() < REFUSAL_BOUND, "the node did not open its network within {REFUSAL_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let summary = tokio::time::timeout(REFUSAL_BOUND, node).await.expect("the node stops when asked").unwrap().unwrap();
    assert_eq!(summary.joins, 0, "nothing listens at the base config's aggregator address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fields_are_named() {
    let tmp = temp_dir("cfg");
    let dir = tmp.path();
    let ok = base(dir);
    let (field, detail) = refused(NodeConfig { key: dir.join("missing.key"), ..ok.clone() }).await;
    assert!(field == "key" && detail.contains("missing.key"), "{field}: {detail}");
    let (field, _) = refused(NodeConfig { aggregator: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(), ..ok.clone() }).await;
    assert_eq!(field, "aggregator");
    let mut missing_data = ok.clone();
    missing_data.data.path = Some(dir.join("nope.csv"));
    let (field, detail) = refused(missing_data).await;
    assert!(field == "data" && detail.contains("nope.csv"), "{field}: {detail}");
    let mut too_few_classes = ok.clone();
    too_few_classes.data.classes = Some(3); // the digits have 10
    match tokio::time::timeout(REFUSAL_BOUND, node::run(too_few_classes, CancellationToken::new())).await {
        Ok(Err(NodeError::Learning(learning::Error::Classes { max_label: 9, classes: 3 }))) => {}
        other => panic!("labels beyond the declared classes are not refused as such: {other:?}"),
    }
    let mut bad_model = ok.clone();
    bad_model.model = Architecture::Cnn { channels: [4, 0], hidden: 8, dropout: 0.0 };
    assert_eq!(refused(bad_model).await.0, "model");
    let mut bad_train = ok.clone();
    bad_train.train.learning_rate = f64::NAN;
    assert_eq!(refused(bad_train).await.0, "train");
    let mut bad_digest = ok.clone();
    bad_digest.digest.epochs = 0;
    assert_eq!(refused(bad_digest).await.0, "digest");
    let privacy_ok = || node::budget::PrivacyConfig {
        epsilon: 4.0,
        delta: 1e-5,
        clip_norm: 1.0,
        rounds: 10,
        noise_multiplier: None,
        noise_seed: None,
    };
    let privacy = privacy_ok();
    let bad_delta =
        NodeConfig { privacy: Some(node::budget::PrivacyConfig { delta: 0.0, ..privacy.clone() }), ..ok.clone() };
    assert_eq!(refused(bad_delta).await.0, "privacy.delta");
    // ε too small for the planned rounds: refused before anything trains or is sent.
    let impossible =
        NodeConfig { privacy: Some(node::budget::PrivacyConfig { epsilon: 1e-3, ..privacy }), ..ok.clone() };
    let (field, detail) = refused(impossible).await;
    assert!(field == "privacy.epsilon" && detail.contains("cannot plan"), "{field}: {detail}");
    // Abstention: a threshold calibrated on private rows is refused under a privacy budget,
    // naming both settings; a fixed threshold is not.
    let calibrated = Some(learning::abstain::Abstain { quantile: Some(0.05), ..Default::default() });
    let fixed = Some(learning::abstain::Abstain { threshold: Some(0.5), ..Default::default() });
    let private = Some(node::budget::PrivacyConfig { epsilon: 4.0, ..privacy_ok() });
    NodeConfig { abstain: calibrated.clone(), ..ok.clone() }.validate().unwrap();
    NodeConfig { abstain: fixed, privacy: private.clone(), ..ok.clone() }.validate().unwrap();
    let (field, detail) = refused(NodeConfig { abstain: calibrated, privacy: private, ..ok.clone() }).await;
    assert!(field == "abstain.quantile" && detail.contains("[privacy]"), "{field}: {detail}");
    let neither = Some(learning::abstain::Abstain::default());
    assert_eq!(refused(NodeConfig { abstain: neither, ..ok.clone() }).await.0, "abstain");
    let mut cold = ok.clone();
    cold.policy.min_temperature = -1.0;
    assert_eq!(refused(cold).await.0, "policy.min_temperature");
    let mut mute = ok.clone();
    mute.policy.encodings.clear();
    assert_eq!(refused(mute).await.0, "policy.encodings");
    // Padding to fewer steps than the node's own training takes would not hide its row count.
    let pad = |steps| NodeConfig { padding: Some(node::config::PaddingConfig { steps }), ..ok.clone() };
    let (field, detail) = refused(pad(10)).await;
    assert!(field == "padding.steps" && detail.contains("is fewer than the"), "{field}: {detail}");
    assert_eq!(refused(pad(0)).await.0, "padding.steps");
    pad(1_000_000).validate().unwrap();
    // A local reference set that is not the pinned one stops the node, and stays as it was.
    let other = protocol::ReferenceSet::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap().to_bytes();
    std::fs::write(&ok.reference, &other).unwrap();
    let (field, detail) = refused(ok.clone()).await;
    assert!(
        field == "policy.reference_sha256" && detail.contains(&ok.policy.reference_sha256.to_hex()),
        "{field}: {detail}"
    );
    assert_eq!(std::fs::read(&ok.reference).unwrap(), other, "the local copy is not replaced");
    std::fs::remove_file(&ok.reference).unwrap();
    // A record of answers that cannot be read is not taken for a fresh start.
    std::fs::create_dir_all(&ok.state_dir).unwrap();
    std::fs::write(ok.state_dir.join(node::policy::ANSWERS_FILE), "{\"count\": 3").unwrap();
    let (field, detail) = refused(ok.clone()).await;
    assert!(field == "state_dir" && detail.contains(node::policy::ANSWERS_FILE), "{field}: {detail}");
}

/// `node.toml` as an operator writes it: `NodeConfig::load` names the dotted key at fault, and
/// refuses keys it does not know, such as the simulated faults that only `fd-sim-node` reads.
#[test]
fn config_files_are_refused_naming_the_key() {
    let tmp = temp_dir("toml");
    let dir = tmp.path();
    let ok = base(dir);
    let good = toml::to_string_pretty(&ok).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(NodeConfig::load(&path).unwrap(), ok, "the written config loads back as it was");
    let agg = ok.aggregator.to_string();
    let without_id = agg.split("/p2p/").next().unwrap().to_owned();
    let sha_line = format!("reference_sha256 = \"{}\"", ok.policy.reference_sha256.to_hex());
    assert!(good.contains(&sha_line), "{good}");
    let cases = [
        (good.replace("federation = \"f\"", "federation = \"has space\""), "federation"),
        (good.replace(&agg, &without_id), "aggregator"),
        (good.replace(&agg, "not an address"), "aggregator"),
        (format!("attack = \"label-flip\"\n{good}"), "attack"),
        (format!("{good}\n[simulation]\ndelay_ms = 1500\n"), "simulation"),
        (good.replace("encodings = [", "encodings = [\"f8\", "), "policy.encodings"),
        // A missing key is named by its table (serde's detail names the key).
        (good.replace(&sha_line, ""), "policy"),
        (good.replace(&sha_line, "reference_sha256 = \"abc\""), "policy.reference_sha256"),
    ];
    for (text, key) in cases {
        assert_ne!(text, good, "the case for `{key}` changes the file");
        std::fs::write(&path, &text).unwrap();
        match NodeConfig::load(&path) {
            Err(NodeError::Config { field, .. }) => assert_eq!(field, key, "{text}"),
            other => panic!("`{key}`: {other:?}\n{text}"),
        }
    }
}

#[test]
fn export_writes_the_checkpointed_model_or_says_there_is_none() {
    let tmp = temp_dir("export");
    let dir = tmp.path();
    let cfg = base(dir);
    match node::export(&cfg, &dir.join("out")) {
        Err(NodeError::Config { field, detail }) => {
            assert!(field == "state_dir" && detail.contains("no model checkpoint"), "{detail}")
        }
        other => panic!("exported without a checkpoint: {other:?}"),
    }
    let net = learning::Model::new(&cfg.model, 64, 10, cfg.backend, 3).unwrap();
    net.save(&cfg.state_dir.join("model")).unwrap();
    let written = node::export(&cfg, &dir.join("out")).unwrap();
    assert_eq!(written, vec![dir.join("out/model.onnx"), dir.join("out/model.safetensors")]);
    // The files hold the checkpoint's weights (ONNX is checked against onnxruntime in learning).
    assert!(std::fs::metadata(&written[0]).unwrap().len() > 4 * net.num_params() as u64);
    net.export_safetensors(&dir.join("direct.safetensors")).unwrap();
    assert!(std::fs::read(&written[1]).unwrap() == std::fs::read(dir.join("direct.safetensors")).unwrap());
}
