//! A typed client for one node's gRPC API. Everything that talks to a node goes through here.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{Axis, BlobId, BlobMetadata, CodecError, RecoverySymbol, Sliver};
use crate::proto::{self, admin_client::AdminClient, storage_client::StorageClient};
use crate::protocol::{
    Certificate, Committee, Confirmation, Gone, NodeId, SignedLifetime, StaleCommittee, SyncRequest,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{address}: {status}")]
    Rpc {
        address: String,
        status: tonic::Status,
    },
    #[error("{address}: invalid address: {message}")]
    Address { address: String, message: String },
    #[error("{address}: node sent invalid data: {message}")]
    Invalid { address: String, message: String },
    /// The node is already past the committee's epoch (`SetCommittee`): a stale command.
    #[error("{address}: {stale}")]
    StaleCommittee {
        address: String,
        stale: StaleCommittee,
    },
    /// The blob expired or was deleted (the node said so in `floe-blob-gone`).
    #[error("{address}: {message}")]
    Gone {
        address: String,
        gone: Gone,
        message: String,
    },
}

impl ClientError {
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            ClientError::StaleCommittee { .. } => Some(tonic::Code::FailedPrecondition),
            ClientError::Gone {
                gone: Gone::Deleted,
                ..
            } => Some(tonic::Code::NotFound),
            ClientError::Gone { .. } => Some(tonic::Code::OutOfRange),
            _ => None,
        }
    }
}

/// Default deadline of one call; large slivers get more (see `transfer_timeout`).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct NodeClient {
    address: String,
    storage: StorageClient<Channel>,
    admin: AdminClient<Channel>,
    /// The admin listener's address, when it is not the storage address.
    admin_address: Option<String>,
    admin_token: Option<String>,
    max_message: usize,
    /// The node this client must be talking to (checked by TLS).
    expect: Option<NodeId>,
}

impl NodeClient {
    /// A client for `address` (`host:port`); connects on first use.
    /// An `https://` address is reached over TLS without checking whose certificate it is
    /// (encrypted, not authenticated); use [`Self::for_node`] when the node's ID is known.
    pub fn new(address: &str, max_message: usize) -> Result<Self, ClientError> {
        Self::build(address, None, max_message)
    }

    /// A client for node `id` at `address`: over TLS (an `https://` address) only a node that
    /// proves it holds `id`'s key is accepted.
    pub fn for_node(address: &str, id: NodeId, max_message: usize) -> Result<Self, ClientError> {
        Self::build(address, Some(id), max_message)
    }

    fn build(
        address: &str,
        expect: Option<NodeId>,
        max_message: usize,
    ) -> Result<Self, ClientError> {
        let channel = Self::channel(address, expect, None)?;
        Ok(Self {
            address: address.to_string(),
            storage: StorageClient::new(channel.clone())
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            admin: AdminClient::new(channel)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
            admin_address: None,
            admin_token: None,
            max_message,
            expect,
        })
    }

    /// A lazy channel to `address`; over TLS, accepting only `expect` (when given) and
    /// presenting a certificate of `client_key` when the server asks for one.
    fn channel(
        address: &str,
        expect: Option<NodeId>,
        client_key: Option<&ed25519_dalek::SigningKey>,
    ) -> Result<Channel, ClientError> {
        let (tls, host_port) = crate::tls::split_address(address);
        let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| ClientError::Address {
                address: address.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(32 << 20))
            .max_frame_size(Some(1 << 20));
        Ok(if tls {
            let config = crate::tls::client_config(expect, client_key).map_err(|e| {
                ClientError::Address {
                    address: address.to_string(),
                    message: e.to_string(),
                }
            })?;
            endpoint
                .connect_with_connector_lazy(crate::tls::connector(host_port.to_string(), config))
        } else {
            endpoint.connect_lazy()
        })
    }

    /// Send admin calls to `address` (the node's `--admin-addr` listener) instead of the
    /// storage address.
    pub fn with_admin_address(mut self, address: &str) -> Result<Self, ClientError> {
        self.admin_address = Some(address.to_string());
        self.rebuild_admin()?;
        Ok(self)
    }

    /// The admin channel: to the admin listener (over TLS with the admin client certificate
    /// derived from the token, `tls::admin_client_key`), or the storage channel when the admin
    /// API shares the storage port.
    fn rebuild_admin(&mut self) -> Result<(), ClientError> {
        let Some(address) = &self.admin_address else {
            return Ok(());
        };
        let key = self
            .admin_token
            .as_deref()
            .map(crate::tls::admin_client_key);
        self.admin = AdminClient::new(Self::channel(address, self.expect, key.as_ref())?)
            .max_decoding_message_size(self.max_message)
            .max_encoding_message_size(self.max_message);
        Ok(())
    }

    /// The admin address of a node whose storage API is at `address` and whose `GetInfo`
    /// reported `admin_port` (0: the admin API shares the storage port).
    pub fn admin_address_of(address: &str, admin_port: u32) -> String {
        if admin_port == 0 {
            return address.to_string();
        }
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        format!("{host}:{admin_port}")
    }

    /// Authenticate admin calls with `token`: as the bearer token of every call, and (over
    /// TLS to a separate admin listener) by the client certificate derived from it.
    pub fn with_admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        if let Err(e) = self.rebuild_admin() {
            // the same address built a channel before; keep that one (calls will fail the
            // handshake and say so)
            tracing::warn!(address = %self.address, error = %e, "admin channel with client certificate");
        }
        self
    }

    /// The node this client insists on (over TLS), if any.
    pub fn node(&self) -> Option<NodeId> {
        self.expect
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn err(&self, status: tonic::Status) -> ClientError {
        if let Some(gone) = Gone::from_status(&status) {
            return ClientError::Gone {
                address: self.address.clone(),
                gone,
                message: status.message().to_string(),
            };
        }
        ClientError::Rpc {
            address: self.address.clone(),
            status,
        }
    }
    fn invalid(&self, message: impl ToString) -> ClientError {
        ClientError::Invalid {
            address: self.address.clone(),
            message: message.to_string(),
        }
    }

    fn req<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(timeout);
        r
    }
    fn admin_req<T>(&self, msg: T) -> Result<tonic::Request<T>, ClientError> {
        let mut r = self.req(msg, CALL_TIMEOUT);
        if let Some(t) = &self.admin_token {
            let v = MetadataValue::try_from(format!("Bearer {t}")).map_err(|e| self.invalid(e))?;
            r.metadata_mut().insert("authorization", v);
        }
        Ok(r)
    }

    /// Deadline for moving `bytes`: the call timeout plus 1 s per 8 MiB.
    pub fn transfer_timeout(bytes: usize) -> Duration {
        CALL_TIMEOUT + Duration::from_secs((bytes >> 23) as u64)
    }

    pub async fn info(&self) -> Result<proto::NodeInfo, ClientError> {
        let r = self
            .storage
            .clone()
            .get_info(self.req(proto::GetInfoRequest {}, Duration::from_secs(5)))
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// The committee the node follows now.
    pub async fn committee(&self) -> Result<Committee, ClientError> {
        self.committee_of(0).await
    }

    /// Committee `epoch` (0: the current one), if the node still knows it.
    pub async fn committee_of(&self, epoch: u32) -> Result<Committee, ClientError> {
        let r = self
            .storage
            .clone()
            .get_committee(self.req(proto::GetCommitteeRequest { epoch }, Duration::from_secs(5)))
            .await;
        let c = r.map_err(|s| self.err(s))?.into_inner();
        Committee::try_from(c).map_err(|e| self.invalid(e))
    }

    pub async fn put_metadata(&self, id: &BlobId, md: &BlobMetadata) -> Result<bool, ClientError> {
        self.put_metadata_with(id, md, None).await
    }

    /// [`Self::put_metadata`] with the blob's signed lifetime (networks that sell storage).
    pub async fn put_metadata_with(
        &self,
        id: &BlobId,
        md: &BlobMetadata,
        lifetime: Option<&SignedLifetime>,
    ) -> Result<bool, ClientError> {
        let msg = proto::PutMetadataRequest {
            blob_id: id.as_bytes().to_vec(),
            metadata: md.to_bytes(),
            lifetime: lifetime.map(|l| l.to_bytes()).unwrap_or_default(),
        };
        let r = self
            .storage
            .clone()
            .put_metadata(self.req(msg, CALL_TIMEOUT))
            .await;
        r.map(|r| r.into_inner().already_stored)
            .map_err(|s| self.err(s))
    }

    /// Metadata of `id`, verified against the ID.
    pub async fn get_metadata(&self, id: &BlobId) -> Result<BlobMetadata, ClientError> {
        let msg = proto::BlobRequest {
            blob_id: id.as_bytes().to_vec(),
        };
        let r = self
            .storage
            .clone()
            .get_metadata(self.req(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| self.err(s))?;
        let md = BlobMetadata::from_bytes(&r.into_inner().metadata).map_err(|e| self.invalid(e))?;
        md.verify(id).map_err(|e| self.invalid(e))?;
        Ok(md)
    }

    pub async fn put_sliver(
        &self,
        id: &BlobId,
        pair: u16,
        sliver: &Sliver,
    ) -> Result<bool, ClientError> {
        let bytes = sliver.to_bytes();
        let timeout = Self::transfer_timeout(bytes.len());
        let msg = proto::PutSliverRequest {
            blob_id: id.as_bytes().to_vec(),
            pair_index: pair as u32,
            sliver: bytes,
        };
        let r = self
            .storage
            .clone()
            .put_sliver(self.req(msg, timeout))
            .await;
        r.map(|r| r.into_inner().already_stored)
            .map_err(|s| self.err(s))
    }

    /// Several slivers in one request (one commit on the node): a result per item, in order
    /// (`Ok(true)` = it was already stored). Keep the request under the message limit
    /// ([`crate::client::blob`] splits batches by bytes) and at most 4096 items.
    pub async fn put_slivers(
        &self,
        items: &[(BlobId, u16, &Sliver)],
    ) -> Result<Vec<Result<bool, ClientError>>, ClientError> {
        let msgs: Vec<proto::PutSliverRequest> = items
            .iter()
            .map(|(id, pair, s)| proto::PutSliverRequest {
                blob_id: id.as_bytes().to_vec(),
                pair_index: *pair as u32,
                sliver: s.to_bytes(),
            })
            .collect();
        let bytes: usize = msgs.iter().map(|m| m.sliver.len()).sum();
        let msg = proto::PutSliversRequest { items: msgs };
        let r = self
            .storage
            .clone()
            .put_slivers(self.req(msg, Self::transfer_timeout(bytes)))
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        self.item_results(
            items.len(),
            "slivers",
            r.results
                .into_iter()
                .map(|x| (x.code, x.message, x.already_stored))
                .collect(),
        )
    }

    /// A sliver, parsed but *not* verified: check it with `Sliver::verify` against metadata.
    pub async fn get_sliver(
        &self,
        id: &BlobId,
        pair: u16,
        axis: Axis,
    ) -> Result<Sliver, ClientError> {
        let msg = proto::GetSliverRequest {
            blob_id: id.as_bytes().to_vec(),
            pair_index: pair as u32,
            axis: proto::Axis::from(axis) as i32,
        };
        let r = self
            .storage
            .clone()
            .get_sliver(self.req(msg, Self::transfer_timeout(64 << 20)))
            .await;
        let bytes = r.map_err(|s| self.err(s))?.into_inner().sliver;
        Sliver::from_bytes(&bytes).map_err(|e| self.invalid(e))
    }

    /// A storage confirmation, with its signature checked.
    pub async fn get_confirmation(&self, id: &BlobId) -> Result<Confirmation, ClientError> {
        let msg = proto::BlobRequest {
            blob_id: id.as_bytes().to_vec(),
        };
        let r = self
            .storage
            .clone()
            .get_confirmation(self.req(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| self.err(s))?;
        self.confirmation_of(r.into_inner(), id)
    }

    /// A confirmation of `id` as sent, its signature checked.
    fn confirmation_of(
        &self,
        c: proto::Confirmation,
        id: &BlobId,
    ) -> Result<Confirmation, ClientError> {
        let conf = Confirmation {
            epoch: c.epoch,
            blob_id: BlobId::from_slice(&c.blob_id).map_err(|e| self.invalid(e))?,
            node_id: NodeId::try_from(c.node_id.as_slice()).map_err(|e| self.invalid(e))?,
            signature: c
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| self.invalid("signature length"))?,
        };
        if conf.blob_id != *id || !conf.verify() {
            return Err(self.invalid("confirmation signature does not verify"));
        }
        // a member answering with another member's confirmation would be counted with its own
        // weight, and the certificate would carry that signer twice (refused by every node)
        if self.expect.is_some_and(|e| e != conf.node_id) {
            return Err(self.invalid(format!(
                "confirmation signed by node {}, not by the node asked",
                conf.node_id.short()
            )));
        }
        Ok(conf)
    }

    /// Per-item results as sent (`code` 0: stored, `already` the flag), one per item sent:
    /// any other count is an invalid answer.
    fn item_results(
        &self,
        sent: usize,
        what: &str,
        results: Vec<(u32, String, bool)>,
    ) -> Result<Vec<Result<bool, ClientError>>, ClientError> {
        if results.len() != sent {
            return Err(self.invalid(format!("{} results for {sent} {what}", results.len())));
        }
        Ok(results
            .into_iter()
            .map(|(code, message, already)| {
                if code == 0 {
                    Ok(already)
                } else {
                    Err(self.err(tonic::Status::new(
                        tonic::Code::from_i32(code as i32),
                        message,
                    )))
                }
            })
            .collect())
    }

    /// A small blob in one call (`StoreBlob`): metadata with its lifetime, these slivers, and
    /// with `confirm` the confirmation once all were stored. `Ok(None)` for the confirmation
    /// when it was not asked for or an item was refused (see the per-item results).
    /// A node too old for the call answers `Unimplemented` (the caller falls back).
    #[allow(clippy::type_complexity)]
    pub async fn store_blob(
        &self,
        id: &BlobId,
        md: &BlobMetadata,
        lifetime: Option<&SignedLifetime>,
        slivers: &[(u16, &Sliver)],
        confirm: bool,
    ) -> Result<(Vec<Result<bool, ClientError>>, Option<Confirmation>), ClientError> {
        let items: Vec<proto::PutSliverRequest> = slivers
            .iter()
            .map(|(pair, s)| proto::PutSliverRequest {
                blob_id: id.as_bytes().to_vec(),
                pair_index: *pair as u32,
                sliver: s.to_bytes(),
            })
            .collect();
        let bytes: usize = items.iter().map(|m| m.sliver.len()).sum();
        let msg = proto::StoreBlobRequest {
            blob_id: id.as_bytes().to_vec(),
            metadata: md.to_bytes(),
            lifetime: lifetime.map(|l| l.to_bytes()).unwrap_or_default(),
            slivers: items,
            confirm,
        };
        let r = self
            .storage
            .clone()
            .store_blob(self.req(msg, Self::transfer_timeout(bytes)))
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let results = self.item_results(
            slivers.len(),
            "slivers",
            r.results
                .into_iter()
                .map(|x| (x.code, x.message, x.already_stored))
                .collect(),
        )?;
        let confirmation = match r.confirmation {
            Some(c) => Some(self.confirmation_of(c, id)?),
            None => None,
        };
        Ok((results, confirmation))
    }

    /// Several certificates in one call (`PutCertificates`): a result per certificate, in
    /// order (`Ok(true)`: it was already there). `Unimplemented` from an older node.
    pub async fn put_certificates(
        &self,
        certs: &[Certificate],
    ) -> Result<Vec<Result<bool, ClientError>>, ClientError> {
        let msg = proto::PutCertificatesRequest {
            certificates: certs.iter().map(proto::Certificate::from).collect(),
        };
        let r = self
            .storage
            .clone()
            .put_certificates(self.req(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        self.item_results(
            certs.len(),
            "certificates",
            r.results
                .into_iter()
                .map(|x| (x.code, x.message, x.already_certified))
                .collect(),
        )
    }

    pub async fn put_certificate(&self, cert: &Certificate) -> Result<bool, ClientError> {
        let r = self
            .storage
            .clone()
            .put_certificate(self.req(proto::Certificate::from(cert), CALL_TIMEOUT))
            .await;
        r.map(|r| r.into_inner().already_certified)
            .map_err(|s| self.err(s))
    }

    /// Recovery symbols for the target slivers, parsed (each still to be verified).
    pub async fn recovery_symbols(
        &self,
        id: &BlobId,
        target_axis: Axis,
        targets: &[u16],
    ) -> Result<Vec<RecoverySymbol>, ClientError> {
        let msg = proto::RecoverySymbolsRequest {
            blob_id: id.as_bytes().to_vec(),
            target_axis: proto::Axis::from(target_axis) as i32,
            target_indices: targets.iter().map(|t| *t as u32).collect(),
        };
        let r = self
            .storage
            .clone()
            .get_recovery_symbols(self.req(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| self.err(s))?;
        r.into_inner()
            .symbols
            .iter()
            .map(|b| RecoverySymbol::from_bytes(b).map_err(|e: CodecError| self.invalid(e)))
            .collect()
    }

    pub async fn blob_status(&self, id: &BlobId) -> Result<proto::BlobStatusResponse, ClientError> {
        let msg = proto::BlobRequest {
            blob_id: id.as_bytes().to_vec(),
        };
        let r = self
            .storage
            .clone()
            .get_blob_status(self.req(msg, CALL_TIMEOUT))
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// One page of certified blobs after `after`.
    pub async fn list_certified(
        &self,
        after: Option<BlobId>,
        limit: u32,
    ) -> Result<(Vec<Certificate>, bool), ClientError> {
        let msg = proto::ListCertifiedRequest {
            after: after.map(|a| a.as_bytes().to_vec()).unwrap_or_default(),
            limit,
        };
        let r = self
            .storage
            .clone()
            .list_certified(self.req(msg, CALL_TIMEOUT))
            .await
            .map_err(|s| self.err(s))?;
        let r = r.into_inner();
        let certs = r
            .certificates
            .into_iter()
            .map(Certificate::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| self.invalid(e))?;
        Ok((certs, r.more))
    }

    /// One page of a shard from its previous owner (PROTOCOL.md §6). Items are returned as sent:
    /// the caller verifies every one against its blob ID and metadata.
    pub async fn sync_shard(
        &self,
        req: &SyncRequest,
        limit: u32,
        page_bytes: usize,
    ) -> Result<proto::SyncShardResponse, ClientError> {
        let msg = proto::SyncShardRequest::new(req, limit);
        let r = self
            .storage
            .clone()
            .sync_shard(self.req(msg, Self::transfer_timeout(page_bytes)))
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// Hand the node committee `c`; a node already past its epoch answers
    /// [`ClientError::StaleCommittee`].
    pub async fn set_committee(&self, c: &Committee) -> Result<(), ClientError> {
        let req = self.admin_req(proto::Committee::from(c))?;
        self.admin
            .clone()
            .set_committee(req)
            .await
            .map(|_| ())
            .map_err(|s| match StaleCommittee::from_status(&s) {
                Some(stale) => ClientError::StaleCommittee {
                    address: self.address.clone(),
                    stale,
                },
                None => self.err(s),
            })
    }

    /// The node's answers (one per item) and the bytes of stored data it read for them.
    pub async fn answer_challenge(
        &self,
        req: proto::ChallengeRequest,
    ) -> Result<proto::ChallengeResponse, ClientError> {
        let req = self.admin_req(req)?;
        let r = self
            .admin
            .clone()
            .answer_challenge(req)
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner())
    }

    /// Hand the node a signed lifetime (an extension or a deletion); true if it was newer.
    pub async fn put_lifetime(&self, l: &SignedLifetime) -> Result<bool, ClientError> {
        let msg = proto::PutLifetimeRequest {
            lifetime: l.to_bytes(),
        };
        self.storage
            .clone()
            .put_lifetime(self.req(msg, CALL_TIMEOUT))
            .await
            .map(|r| r.into_inner().applied)
            .map_err(|s| self.err(s))
    }

    /// A page of the control plane's lifetime log from `first_seq` (admin); returns the
    /// node's log position after it.
    pub async fn apply_lifetimes(
        &self,
        first_seq: u64,
        lifetimes: Vec<Vec<u8>>,
    ) -> Result<u64, ClientError> {
        let req = self.admin_req(proto::ApplyLifetimesRequest {
            first_seq,
            lifetimes,
        })?;
        self.admin
            .clone()
            .apply_lifetimes(req)
            .await
            .map(|r| r.into_inner().lifetime_seq)
            .map_err(|s| self.err(s))
    }

    pub async fn sync_status(&self) -> Result<proto::SyncStatus, ClientError> {
        let req = self.admin_req(proto::GetSyncStatusRequest {})?;
        self.admin
            .clone()
            .get_sync_status(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.err(s))
    }
}
