//! `fd-node init` as a data holder meets it: the data is checked first (labels outside the
//! federation's classes are refused with their own error), the written `node.toml` loads, and a
//! node started from it stops before dialling when its reference set does not fit its data
//! (another width) or is not the pinned one.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;

use learning::data::{DataSpec, LabelColumn, Preprocess};
use node::init::{DataCheck, Init, check_data, init};
use node::{Error, NodeConfig};
use protocol::{ReferenceSet, ReferenceSetId};
use tokio_util::sync::CancellationToken;

/// A fresh folder for a test's files, removed when the test ends (also when it fails).
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("node-init-{name}-")).tempdir().unwrap()
}

/// A CSV of 2 features and a `y` column with labels 0, 1, 2.
fn data(dir: &Path, classes: usize) -> DataSpec {
    let csv = dir.join("mine.csv");
    std::fs::write(&csv, "a,b,y\n1,2,0\n3,4,1\n5,6,2\n7,8,2\n").unwrap();
    let mut spec = DataSpec::file(csv, Some(LabelColumn::from_flag("y")), false, Preprocess::None);
    spec.classes = Some(classes);
    spec
}

fn aggregator() -> net::multiaddr::Multiaddr {
    let agg = protocol::Identity::from_seed([5; 32]).unwrap().id();
    format!("/ip4/127.0.0.1/tcp/9/p2p/{}", net::keys::peer_id_string(&agg)).parse().unwrap()
}

fn initialised(dir: &Path, pin: ReferenceSetId) -> NodeConfig {
    let i = Init {
        dir: dir.join("holder"),
        data: data(dir, 3),
        federation: protocol::FederationId::new("f").unwrap(),
        aggregator: aggregator(),
        reference_sha256: Some(pin),
        reference_bytes: Some(1234),
        model: learning::Architecture::Mlp { hidden: vec![4], dropout: 0.0 },
    };
    let (peer, config) = init(&i).unwrap();
    assert!(peer.starts_with("12D3KooW"));
    assert!(matches!(init(&i), Err(Error::Config { .. })), "never overwrite a node.toml");
    let cfg = NodeConfig::load(&config).unwrap();
    assert_eq!(cfg.policy.reference_bytes, Some(1234), "the size is pinned beside the hash");
    cfg
}

#[test]
fn the_data_check_counts_rows_and_classes_and_refuses_labels_beyond_the_federations() {
    let tmp = scratch("check");
    let dir = tmp.path();
    let ok = check_data(&data(dir, 3)).unwrap();
    assert_eq!(ok, DataCheck { rows: 4, features: 2, classes: vec![(0, 1), (1, 1), (2, 2)] });
    match check_data(&data(dir, 2)) {
        Err(Error::Learning(learning::Error::Classes { max_label, classes })) => {
            assert_eq!((max_label, classes), (2, 2))
        }
        other => panic!("label 2 of a 2-class federation was accepted: {other:?}"),
    }
    let no_p2p = Init {
        dir: dir.join("x"),
        data: data(dir, 3),
        federation: protocol::FederationId::new("f").unwrap(),
        aggregator: "/ip4/127.0.0.1/tcp/9".parse().unwrap(),
        reference_sha256: None,
        reference_bytes: None,
        model: learning::Architecture::Mlp { hidden: vec![4], dropout: 0.0 },
    };
    assert!(matches!(init(&no_p2p), Err(Error::Config { field, .. }) if field == "aggregator"));
    assert!(!dir.join("x").join("node.toml").exists(), "nothing written for a wrong address");
}

#[tokio::test]
async fn a_reference_set_of_another_width_or_hash_stops_the_node_before_it_dials() {
    let tmp = scratch("reference");
    let dir = tmp.path();
    let wide = ReferenceSet::new(2, 3, vec![0.0; 6]).unwrap().to_bytes();
    let cfg = initialised(dir, ReferenceSetId::digest(&wide));
    std::fs::create_dir_all(cfg.reference.parent().unwrap()).unwrap();
    std::fs::write(&cfg.reference, &wide).unwrap();
    match node::run(cfg.clone(), CancellationToken::new()).await {
        Err(Error::FeatureCount { data, reference }) => assert_eq!((data, reference), (2, 3)),
        other => panic!("a 3-feature reference set was accepted for 2-feature data: {other:?}"),
    }
    let other = NodeConfig { policy: node::policy::QueryPolicy::pinned(ReferenceSetId([7; 32])), ..cfg };
    match node::run(other, CancellationToken::new()).await {
        Err(Error::Config { field, .. }) => assert_eq!(field, "policy.reference_sha256"),
        other => panic!("a reference set that is not the pinned one was accepted: {other:?}"),
    }
}

#[tokio::test]
async fn an_aggregator_address_naming_another_peer_stops_the_node_with_who_answered() {
    let tmp = scratch("wrong-peer");
    let dir = tmp.path();
    let cfg = initialised(dir, ReferenceSetId([1; 32]));
    let me = net::keys::read(&cfg.key).unwrap().id();
    // A peer listens where the node looks for the aggregator, but it is not the one the
    // address's /p2p/ suffix names.
    let stranger = protocol::Identity::from_seed([8; 32]).unwrap();
    let stranger_id = net::keys::peer_id_string(&stranger.id());
    let token = CancellationToken::new();
    let (client, _events, handle) =
        net::spawn(stranger, net::NetConfig::new(cfg.federation.clone(), vec![me]), &token).unwrap();
    let bound = client.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap()).await.unwrap();
    let named = protocol::Identity::from_seed([5; 32]).unwrap().id();
    let cfg = NodeConfig { aggregator: bound.with(net::multiaddr::Protocol::P2p(net::peer_id(&named))), ..cfg };
    let result =
        tokio::time::timeout(std::time::Duration::from_secs(60), node::run(cfg, CancellationToken::new())).await;
    match result.expect("the node stops instead of retrying") {
        Err(Error::Net(net::Error::WrongPeer { obtained, .. })) => assert_eq!(obtained, stranger_id),
        other => panic!("a dial that reached another peer was not reported as such: {other:?}"),
    }
    drop(client);
    handle.shutdown().await;
}
