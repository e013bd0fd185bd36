//! Registrations per second of the control plane (docs/economics.md), with p50/p99 latency of a
//! request, through its real gRPC API on loopback (signed requests, journal synced per request)
//! and at the economy alone (journal synced per batch). Prints a table.
//!
//! `cargo bench -p floe-operator --bench registrations`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use floe_node::client::control::{ControlClient, RegisterItem};
use floe_node::codec::BlobId;
use floe_node::protocol::AccountId;
use floe_operator::control::api::ControlService;
use floe_operator::control::economy::Economy;
use floe_operator::control::registry::{Event, MarketSettings, Want};

fn settings() -> MarketSettings {
    MarketSettings {
        max_epochs_ahead: 53,
        faucet_grant: u64::MAX / 4,
    }
}

fn blob(i: u64) -> BlobId {
    BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn row(what: &str, batch: usize, total: usize, elapsed: Duration, lat: &mut [Duration]) {
    println!(
        "| {what:<22} | {batch:>5} | {total:>6} | {:>9.0} | {:>8.2} | {:>8.2} |",
        total as f64 / elapsed.as_secs_f64(),
        pct(lat, 0.5).as_secs_f64() * 1e3,
        pct(lat, 0.99).as_secs_f64() * 1e3
    );
}

fn open(dir: &std::path::Path) -> Economy {
    let mut e = Economy::open(dir, settings()).unwrap();
    e.submit(Event::Market {
        epoch: 1,
        storage_price: 100,
        write_price: 20,
    })
    .unwrap();
    e
}

fn economy_alone(batch: usize, total: usize, seed: &mut u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path());
    let acct = AccountId([7; 32]);
    e.submit(Event::Faucet {
        account: acct,
        amount: u64::MAX / 4,
    })
    .unwrap();
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..total / batch {
        let nonce = i as u64 + 1;
        let items = (0..batch)
            .map(|_| {
                *seed += 1;
                Want {
                    blob: blob(*seed),
                    encoded_size: 5 << 20,
                    epochs: 5,
                    deletable: true,
                }
            })
            .collect();
        let t = Instant::now();
        e.submit(Event::Register {
            account: acct,
            nonce,
            items,
        })
        .unwrap();
        lat.push(t.elapsed());
    }
    row("economy (journal)", batch, total, start.elapsed(), &mut lat);
}

async fn through_api(batch: usize, total: usize, seed: &mut u64) {
    let dir = tempfile::tempdir().unwrap();
    let economy = Arc::new(Mutex::new(open(dir.path())));
    let service = ControlService {
        economy,
        faucet: true,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(floe_node::proto::control_server::ControlServer::new(
                service,
            ))
            .serve_with_incoming(incoming),
    );
    let client = ControlClient::new(&addr.to_string()).unwrap();
    let key = SigningKey::from_bytes(&[3; 32]);
    client
        .faucet(&AccountId::of(&key), u64::MAX / 8)
        .await
        .unwrap();
    let mut lat = Vec::new();
    let start = Instant::now();
    for _ in 0..total / batch {
        let items: Vec<RegisterItem> = (0..batch)
            .map(|_| {
                *seed += 1;
                RegisterItem {
                    blob: blob(*seed),
                    encoded_size: 5 << 20,
                    epochs: 5,
                    deletable: true,
                }
            })
            .collect();
        let t = Instant::now();
        let r = client.register(&key, &items).await.unwrap();
        lat.push(t.elapsed());
        assert!(r.iter().all(|x| x.is_ok()));
    }
    row("gRPC API (signed)", batch, total, start.elapsed(), &mut lat);
    server.abort();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("| path                   | batch |  total |  regs/s   | p50 ms   | p99 ms   |");
    println!("|------------------------|-------|--------|-----------|----------|----------|");
    let mut seed = 0u64;
    for (batch, total) in [(1, 1000), (10, 5000), (100, 20_000), (1000, 50_000)] {
        economy_alone(batch, total, &mut seed);
    }
    for (batch, total) in [(1, 1000), (10, 5000), (100, 20_000), (1000, 50_000)] {
        through_api(batch, total, &mut seed).await;
    }
}
