//! Certificates to one node, batched: concurrent writes queue their certificates, and one task
//! per node sends whatever is queued in one `PutCertificates` call — so sixteen puts in flight
//! cost the node one round trip and one commit instead of sixteen. A node that does not know
//! the call (`Unimplemented`: an older version during a rolling upgrade) gets `PutCertificate`
//! one by one from then on. Nothing waits to fill a batch: a lone certificate goes at once.

use tokio::sync::{mpsc, oneshot};

use super::node::{ClientError, NodeClient};
use crate::protocol::Certificate;

/// Most certificates per call (the node takes up to 1024), and most bytes: the node reads
/// `PutCertificates` as a light request, whose body it caps at 1 MiB.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 512 << 10;

/// A certificate's size on the wire, near enough (epoch, ID, each signer's ID and signature).
fn wire_size(c: &Certificate) -> usize {
    48 + c.signers.len() * 100
}

type Job = (Certificate, oneshot::Sender<Result<bool, ClientError>>);

/// The batching sender of one node's certificates; its task ends when this is dropped.
pub struct Certifier {
    tx: mpsc::UnboundedSender<Job>,
    address: String,
}

impl Certifier {
    /// Start the node's task (needs a Tokio runtime). `attempts`: tries of one call.
    pub fn start(node: NodeClient, attempts: u32) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let address = node.address().to_string();
        tokio::spawn(run(node, attempts, rx));
        Certifier { tx, address }
    }

    /// Deliver `cert`; `Ok(true)` when the node already had it.
    pub async fn certify(&self, cert: Certificate) -> Result<bool, ClientError> {
        let (reply, answer) = oneshot::channel();
        let gone = || ClientError::Invalid {
            address: self.address.clone(),
            message: "the certificate sender stopped".into(),
        };
        self.tx.send((cert, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The same error again, for each certificate of a failed call.
fn copy(e: &ClientError, address: &str) -> ClientError {
    match e {
        ClientError::Rpc { address, status } => ClientError::Rpc {
            address: address.clone(),
            status: tonic::Status::new(status.code(), status.message()),
        },
        other => ClientError::Invalid {
            address: address.to_string(),
            message: other.to_string(),
        },
    }
}

async fn run(node: NodeClient, attempts: u32, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batches = true;
    // a certificate that did not fit the last batch opens the next
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut bytes = wire_size(&first.0);
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) if bytes + wire_size(&j.0) > BATCH_BYTES => {
                    next = Some(j);
                    break;
                }
                Ok(j) => {
                    bytes += wire_size(&j.0);
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let certs: Vec<Certificate> = jobs.iter().map(|(c, _)| c.clone()).collect();
        let mut results = None;
        if batches {
            match super::blob::retry(attempts, || node.put_certificates(&certs)).await {
                Ok(r) => results = Some(r),
                Err(e) if e.code() == Some(tonic::Code::Unimplemented) => batches = false,
                Err(e) => {
                    results = Some(
                        certs
                            .iter()
                            .map(|_| Err(copy(&e, node.address())))
                            .collect(),
                    )
                }
            }
        }
        let results = match results {
            Some(r) => r,
            None => {
                let mut r = Vec::with_capacity(certs.len());
                for c in &certs {
                    r.push(super::blob::retry(attempts, || node.put_certificate(c)).await);
                }
                r
            }
        };
        for ((_, reply), r) in jobs.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }
}
