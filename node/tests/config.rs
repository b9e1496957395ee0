//! A wrong node config fails at start with a message that names the field.
#![allow(clippy::unwrap_used)] // tests and benches: a panic is the failure report

use learning::data::{DataFormat, DataSpec, Preprocess};
use learning::Architecture;
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
    }
}

async fn field(cfg: NodeConfig) -> String {
    match node::run(cfg, CancellationToken::new()).await {
        Err(NodeError::Config { field, detail }) => format!("{field}: {detail}"),
        Err(e) => panic!("not a config error: {e}"),
        Ok(_) => panic!("accepted a bad config"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fields_are_named() {
    let dir = std::env::temp_dir().join(format!("node-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = base(&dir);
    let e = field(NodeConfig { key: dir.join("missing.key"), ..ok.clone() }).await;
    assert!(e.starts_with("key:") && e.contains("missing.key"), "{e}");
    assert!(field(NodeConfig { aggregator: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(), ..ok.clone() }).await.starts_with("aggregator:"));
    let mut missing_data = ok.clone();
    missing_data.data.path = Some(dir.join("nope.csv"));
    let e = field(missing_data).await;
    assert!(e.starts_with("data:") && e.contains("nope.csv"), "{e}");
    let mut bad_model = ok.clone();
    bad_model.model = Architecture::Cnn { channels: [4, 4], hidden: 8, dropout: 0.0 };
    let mut bad_data = bad_model.clone();
    bad_data.data.classes = Some(3);
    assert!(field(bad_data).await.starts_with("data:"));
    let mut bad_train = ok.clone();
    bad_train.train.learning_rate = f64::NAN;
    assert!(field(bad_train).await.starts_with("train:"));
}

#[test]
fn export_writes_the_checkpointed_model_or_says_there_is_none() {
    let dir = std::env::temp_dir().join(format!("node-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = base(&dir);
    match node::export(&cfg, &dir.join("out")) {
        Err(NodeError::Config { field, detail }) => assert!(field == "state_dir" && detail.contains("no model checkpoint"), "{detail}"),
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
    std::fs::remove_dir_all(&dir).unwrap();
}
