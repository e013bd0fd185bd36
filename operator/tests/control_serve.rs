//! `floe control serve` (a StorageCluster's control pod) as a real process over real gRPC: the
//! operator's side (`MarketAdmin` through `RemoteMarket`) and the clients' side (`Control`)
//! share one journal; a wrong token is refused; after `kill -9` the market comes back with
//! every confirmed registration and no genesis credited twice.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use floe_node::client::control::{ControlClient, RegisterItem};
use floe_node::codec::BlobId;
use floe_node::protocol::{AccountId, NodeId};
use floe_operator::control::market::{MarketError, MarketLink, RemoteMarket};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(dir: &Path, port: u16, genesis: &AccountId, kept: &AccountId) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["control", "serve"])
        .arg("--dir")
        .arg(dir.join("journal"))
        .arg("--key-file")
        .arg(dir.join("control.key"))
        .arg("--admin-token-file")
        .arg(dir.join("token"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--faucet-grant", "0", "--max-epochs-ahead", "10"])
        .args(["--genesis", &format!("{genesis}=5000000")])
        .args(["--keep-funded", &format!("{kept}=800")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("floe control serve starts");
    // wait until it accepts connections
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the control server never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_pods_market_serves_the_operator_and_the_clients_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let control_key = SigningKey::from_bytes(&[9; 32]);
    std::fs::write(dir.path().join("control.key"), control_key.to_bytes()).unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let owner = SigningKey::from_bytes(&[3; 32]);
    let owner_id = AccountId::of(&owner);
    let gateway = AccountId([4; 32]);
    let port = free_port();
    let mut server = start(dir.path(), port, &owner_id, &gateway);
    let address = format!("http://127.0.0.1:{port}");
    let market = MarketLink::Remote(Box::new(RemoteMarket::new(&address, "s3cret").unwrap()));

    // the operator's view: the key the committees carry, genesis and the kept account funded
    let v = market.view().await.unwrap();
    assert_eq!(
        v.control_key,
        control_key.verifying_key().to_bytes(),
        "the market signs with the key from the Secret"
    );
    assert_eq!(v.totals.minted, 5_000_000 + 800);
    assert_eq!(v.head, 0);

    // a wrong token is refused, and changes nothing
    let bad = MarketLink::Remote(Box::new(RemoteMarket::new(&address, "wrong").unwrap()));
    match bad.set_market(1, 1, 1).await {
        Err(MarketError::Rpc { code, .. }) => assert_eq!(code, tonic::Code::Unauthenticated),
        other => panic!("a wrong token was not refused: {other:?}"),
    }
    assert_eq!(market.view().await.unwrap().prices, (0, 0));

    // the brain publishes epoch 1 and its prices; clients register through the Control API
    market.set_market(1, 100, 20).await.unwrap();
    let v = market.view().await.unwrap();
    assert_eq!((v.epoch, v.prices), (1, (100, 20)));
    let control = ControlClient::new(&address).unwrap();
    let prices = control.prices().await.unwrap();
    assert_eq!((prices.storage_price, prices.write_price), (100, 20));
    let blob = BlobId(*blake3::hash(b"one blob").as_bytes());
    let got = control
        .register(
            &owner,
            &[RegisterItem {
                blob,
                encoded_size: 1 << 20,
                epochs: 2,
                deletable: true,
            }],
        )
        .await
        .unwrap();
    let r = got[0].as_ref().expect("registered");
    // one MiB: storage 100 × 2 epochs + write 20
    assert_eq!(r.cost, 220);
    assert_eq!(r.balance, 5_000_000 - 220);

    // what the brain feeds members, and asks before a challenge round
    let log = market.lifetimes(1, 100).await.unwrap();
    assert_eq!(log.len(), 1);
    let unknown = BlobId([7; 32]);
    assert_eq!(
        market.live(2, &[blob, unknown]).await.unwrap(),
        vec![true, true]
    );
    assert_eq!(
        market.live(3, &[blob, unknown]).await.unwrap(),
        vec![false, true],
        "expired after its two epochs; a blob the market never saw is not its business"
    );

    // settling is idempotent: a retried call answers the recorded settlement
    let members = vec![(NodeId([1; 32]), 6, true), (NodeId([2; 32]), 4, false)];
    let s1 = market.settle(1, 1000, members.clone()).await.unwrap();
    let s2 = market.settle(1, 1000, members).await.unwrap();
    assert_eq!(s1, s2);
    assert_eq!(s1.paid.get(&NodeId([2; 32])).copied().unwrap_or(0), 0);
    assert!(s1.paid[&NodeId([1; 32])] > 0);
    let before = market.view().await.unwrap();

    // kill -9 and start again on the same journal: everything confirmed is there, genesis and
    // the top-up are not credited again
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let port = server.port;
    drop(server);
    let _server = start(dir.path(), port, &owner_id, &gateway);
    let after = market.view().await.unwrap();
    assert_eq!(after, before, "the market after kill -9");
    let a = control.account(&owner_id).await.unwrap();
    assert_eq!(a.balance, 5_000_000 - 220);
}
