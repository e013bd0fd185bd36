//! Storage as users buy it (docs/economics.md): accounts, blob lifetimes, fees and their
//! settlement into the members' rewards. Pure: a deterministic state machine over [`Event`]s,
//! so the journal that persists it (`control::economy`) replays to exactly the same state,
//! signatures included (Ed25519 signing is deterministic).
//!
//! Money: integer units. Registering `epochs` epochs of a blob of `u` units (MiB of encoded
//! size, rounded up) costs `storage_price × u × epochs + write_price × u`; extending costs the
//! storage part. The storage fee of each epoch is held for that epoch, the write fee for the
//! first; when an epoch ends its fees, the subsidy and what rolled over are split among the
//! members by shards (largest remainder), and the parts of members that failed their challenge
//! roll over to the next epoch. Always: Σ paid in (fees + subsidies) = Σ rewarded + rolled
//! over + Σ held for future epochs ([`Registry::balanced`]).

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::SigningKey;
use floe_node::codec::BlobId;
use floe_node::protocol::{units, AccountId, Lifetime, NodeId, SignedLifetime};
use serde::{Deserialize, Serialize};

use super::ledger::split;

/// Settings of the market (from the body: CLI flags, the StorageCluster spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketSettings {
    /// The furthest a lifetime may end beyond the current epoch.
    pub max_epochs_ahead: u32,
    /// What the faucet grants when no amount is asked for (0: no faucet).
    pub faucet_grant: u64,
}

/// One blob to register, as a request carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    #[serde(with = "blob_hex")]
    pub blob: BlobId,
    pub encoded_size: u64,
    pub epochs: u32,
    pub deletable: bool,
}

mod blob_hex {
    use floe_node::codec::BlobId;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &BlobId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b.as_bytes()))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let v = hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)?;
        BlobId::from_slice(&v).map_err(serde::de::Error::custom)
    }
}

/// Everything that changes the registry, in the order it happened (the journal's lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Faucet {
        account: AccountId,
        amount: u64,
    },
    /// The market as of this moment: current epoch and the prices the committee published.
    Market {
        epoch: u32,
        storage_price: u64,
        write_price: u64,
    },
    Register {
        account: AccountId,
        nonce: u64,
        items: Vec<Want>,
    },
    Extend {
        account: AccountId,
        nonce: u64,
        #[serde(with = "blob_hex")]
        blob: BlobId,
        epochs: u32,
    },
    Delete {
        account: AccountId,
        nonce: u64,
        #[serde(with = "blob_hex")]
        blob: BlobId,
    },
    /// Epoch `epoch` ended: pay its fees, the subsidy and what rolled over to `members`
    /// (node, shards, passed its challenge).
    Settle {
        epoch: u32,
        subsidy: u64,
        members: Vec<(NodeId, u64, bool)>,
    },
}

/// Why a request was refused (nothing was charged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient balance: this costs {cost} units, the account holds {balance}")]
    Balance { cost: u64, balance: u64 },
    #[error("nonce {got} is not larger than the last one used ({last}); sign the request again")]
    Nonce { got: u64, last: u64 },
    #[error("epochs must be at least 1")]
    NoEpochs,
    #[error("the lifetime would end at epoch {end}, more than {max} epochs after epoch {epoch}, the first it would pay for")]
    TooFar { end: u32, max: u32, epoch: u32 },
    #[error("blob {0} is not registered")]
    Unknown(BlobId),
    #[error("blob {blob} expired at epoch {end}; register it again")]
    Expired { blob: BlobId, end: u32 },
    #[error("blob {0} was deleted")]
    Deleted(BlobId),
    #[error("blob {0} is permanent: it cannot be deleted before it expires")]
    Permanent(BlobId),
    #[error("blob {0} belongs to another account")]
    NotOwner(BlobId),
    #[error("blob {0} is registered as deletable by another account (its owner may delete it)")]
    TakenDeletable(BlobId),
    #[error("the market is not open yet (no committee with prices)")]
    NoMarket,
    #[error("the faucet is closed on this network")]
    NoFaucet,
}

/// A lifetime granted or changed: what it cost and the balance left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub lifetime: SignedLifetime,
    pub cost: u64,
    pub balance: u64,
}

/// One epoch's settlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub epoch: u32,
    /// Fees of this epoch (and any older ones not settled before) in the pool.
    pub fees: u64,
    pub subsidy: u64,
    /// Rolled over from the previous epoch into this pool.
    pub carried_in: u64,
    pub paid: BTreeMap<NodeId, u64>,
    /// Parts of members that failed, carried to the next epoch.
    pub rolled_over: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountState {
    pub balance: u64,
    /// The last nonce used; the next request must carry a larger one.
    pub nonce: u64,
}

/// Totals for the status and the identity check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub fees_paid: u64,
    pub subsidies: u64,
    pub rewarded: u64,
    pub rolled_over: u64,
    pub held: u64,
    pub registrations: u64,
    pub extensions: u64,
    pub deletions: u64,
    pub refused: u64,
    pub balances: u64,
    pub minted: u64,
}

pub struct Registry {
    key: SigningKey,
    pub settings: MarketSettings,
    epoch: u32,
    storage_price: u64,
    write_price: u64,
    accounts: HashMap<AccountId, AccountState>,
    blobs: HashMap<BlobId, Lifetime>,
    /// Every lifetime signed, in order: sequence s is `log[s − 1]` (what nodes are fed).
    log: Vec<SignedLifetime>,
    /// Fees held per future epoch.
    fees: BTreeMap<u32, u64>,
    settled_through: u32,
    carry: u64,
    rewards: BTreeMap<NodeId, u64>,
    settlements: BTreeMap<u32, Settlement>,
    totals: Totals,
}

/// Settlements kept for idempotent replays and the status.
const SETTLEMENTS_KEPT: usize = 16;

impl Registry {
    pub fn new(key: SigningKey, settings: MarketSettings) -> Self {
        Self {
            key,
            settings,
            epoch: 0,
            storage_price: 0,
            write_price: 0,
            accounts: HashMap::new(),
            blobs: HashMap::new(),
            log: Vec::new(),
            fees: BTreeMap::new(),
            settled_through: 0,
            carry: 0,
            rewards: BTreeMap::new(),
            settlements: BTreeMap::new(),
            totals: Totals::default(),
        }
    }

    pub fn control_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    pub fn epoch(&self) -> u32 {
        self.epoch
    }
    pub fn prices(&self) -> (u64, u64) {
        (self.storage_price, self.write_price)
    }
    /// Registrations made now pay from this epoch on: the current one, unless its fees were
    /// already paid out (the change to the next one is under way).
    pub fn first_billed_epoch(&self) -> u32 {
        self.epoch.max(self.settled_through + 1)
    }
    pub fn account(&self, a: &AccountId) -> Option<AccountState> {
        self.accounts.get(a).copied()
    }
    pub fn lifetime(&self, b: &BlobId) -> Option<Lifetime> {
        self.blobs.get(b).copied()
    }
    /// Sequence of the newest lifetime signed.
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }
    /// Up to `limit` lifetimes from sequence `from` (1-based) on.
    pub fn log_from(&self, from: u64, limit: usize) -> &[SignedLifetime] {
        let start = (from.max(1) - 1) as usize;
        let end = start.saturating_add(limit).min(self.log.len());
        self.log.get(start..end).unwrap_or(&[])
    }
    pub fn rewards(&self) -> &BTreeMap<NodeId, u64> {
        &self.rewards
    }
    pub fn settlement(&self, epoch: u32) -> Option<&Settlement> {
        self.settlements.get(&epoch)
    }
    pub fn totals(&self) -> Totals {
        Totals {
            held: self.fees.values().sum(),
            rolled_over: self.carry,
            balances: self.accounts.values().map(|a| a.balance).sum(),
            ..self.totals
        }
    }
    /// Σ paid in = Σ rewarded + rolled over + held for future epochs; and every unit minted
    /// is in a balance or was paid in as a fee.
    pub fn balanced(&self) -> bool {
        let t = self.totals();
        t.fees_paid + t.subsidies == t.rewarded + t.rolled_over + t.held
            && t.minted == t.balances + t.fees_paid
    }
    /// Is `blob` stored in `epoch` (registered, not deleted, not expired)? Blobs the registry
    /// never saw are not its business (an open network): true.
    pub fn live_or_unknown(&self, blob: &BlobId, epoch: u32) -> bool {
        self.blobs
            .get(blob)
            .is_none_or(|l| l.gone_at(epoch).is_none())
    }

    /// Check a signed request's nonce (before it is journaled).
    pub fn check_nonce(&self, account: &AccountId, nonce: u64) -> Result<(), Refusal> {
        let last = self.accounts.get(account).map_or(0, |a| a.nonce);
        if nonce <= last {
            return Err(Refusal::Nonce { got: nonce, last });
        }
        Ok(())
    }

    /// Apply one event. Deterministic: replaying the journal gives the same state.
    pub fn apply(&mut self, ev: &Event) -> Outcome {
        match ev {
            Event::Faucet { account, amount } => {
                let a = self.accounts.entry(*account).or_default();
                a.balance = a.balance.saturating_add(*amount);
                self.totals.minted = self.totals.minted.saturating_add(*amount);
                Outcome::Account(*a)
            }
            Event::Market {
                epoch,
                storage_price,
                write_price,
            } => {
                self.epoch = self.epoch.max(*epoch);
                self.storage_price = *storage_price;
                self.write_price = *write_price;
                Outcome::Done
            }
            Event::Register {
                account,
                nonce,
                items,
            } => {
                if let Err(r) = self.take_nonce(account, *nonce) {
                    return Outcome::Refused(r);
                }
                Outcome::Registered(items.iter().map(|w| self.register(account, w)).collect())
            }
            Event::Extend {
                account,
                nonce,
                blob,
                epochs,
            } => match self
                .take_nonce(account, *nonce)
                .and_then(|()| self.extend(account, blob, *epochs))
            {
                Ok(g) => Outcome::Granted(g),
                Err(r) => self.refused(r),
            },
            Event::Delete {
                account,
                nonce,
                blob,
            } => match self
                .take_nonce(account, *nonce)
                .and_then(|()| self.delete(account, blob))
            {
                Ok(g) => Outcome::Granted(g),
                Err(r) => self.refused(r),
            },
            Event::Settle {
                epoch,
                subsidy,
                members,
            } => Outcome::Settled(self.settle(*epoch, *subsidy, members)),
        }
    }

    fn refused(&mut self, r: Refusal) -> Outcome {
        self.totals.refused += 1;
        Outcome::Refused(r)
    }

    fn take_nonce(&mut self, account: &AccountId, nonce: u64) -> Result<(), Refusal> {
        self.check_nonce(account, nonce)?;
        self.accounts.entry(*account).or_default().nonce = nonce;
        Ok(())
    }

    fn sign(&mut self, mut l: Lifetime) -> SignedLifetime {
        l.sequence = self.log.len() as u64 + 1;
        let s = l.sign(&self.key);
        self.log.push(s);
        self.blobs.insert(l.blob_id, l);
        s
    }

    /// Charge `cost`: storage `per_epoch` for each epoch of `epochs`, plus `write` in the first.
    fn charge(
        &mut self,
        account: &AccountId,
        per_epoch: u64,
        epochs: std::ops::Range<u32>,
        write: u64,
    ) -> Result<(u64, u64), Refusal> {
        let n = u64::from(epochs.end.saturating_sub(epochs.start));
        let cost = per_epoch.saturating_mul(n).saturating_add(write);
        let balance = self.accounts.get(account).map_or(0, |a| a.balance);
        if cost > balance {
            return Err(Refusal::Balance { cost, balance });
        }
        let a = self.accounts.entry(*account).or_default();
        a.balance -= cost;
        let left = a.balance;
        for e in epochs.clone() {
            *self.fees.entry(e).or_default() += per_epoch;
        }
        if write > 0 {
            *self.fees.entry(epochs.start).or_default() += write;
        }
        self.totals.fees_paid += cost;
        Ok((cost, left))
    }

    /// At most `max_epochs_ahead` epochs from the first one a registration made now pays for:
    /// `--epochs max` is accepted during an epoch change too, when that is the next epoch.
    fn check_end(&self, end: u32) -> Result<(), Refusal> {
        let max = self.settings.max_epochs_ahead;
        let from = self.first_billed_epoch();
        if end.saturating_sub(from) > max {
            return Err(Refusal::TooFar {
                end,
                max,
                epoch: from,
            });
        }
        Ok(())
    }

    fn register(&mut self, account: &AccountId, w: &Want) -> Result<Granted, Refusal> {
        let r = self.try_register(account, w);
        if r.is_err() {
            self.totals.refused += 1;
        }
        r
    }

    fn try_register(&mut self, account: &AccountId, w: &Want) -> Result<Granted, Refusal> {
        if self.epoch == 0 {
            return Err(Refusal::NoMarket);
        }
        if w.epochs == 0 {
            return Err(Refusal::NoEpochs);
        }
        let u = units(w.encoded_size);
        let first = self.first_billed_epoch();
        let end = first.saturating_add(w.epochs);
        self.check_end(end)?;
        let per_epoch = self.storage_price.saturating_mul(u);
        if let Some(old) = self.blobs.get(&w.blob).copied() {
            if old.gone_at(self.epoch).is_none() && old.encoded_size == w.encoded_size {
                if old.deletable && old.owner != account.0 {
                    return Err(Refusal::TakenDeletable(w.blob));
                }
                // already stored: only epochs beyond its end are bought (no write fee again)
                if end <= old.end_epoch {
                    let balance = self.accounts.get(account).map_or(0, |a| a.balance);
                    let last = self.log[(old.sequence - 1) as usize];
                    return Ok(Granted {
                        lifetime: last,
                        cost: 0,
                        balance,
                    });
                }
                let (cost, balance) = self.charge(account, per_epoch, old.end_epoch..end, 0)?;
                self.totals.extensions += 1;
                let lifetime = self.sign(Lifetime {
                    end_epoch: end,
                    ..old
                });
                return Ok(Granted {
                    lifetime,
                    cost,
                    balance,
                });
            }
        }
        let write = self.write_price.saturating_mul(u);
        let (cost, balance) = self.charge(account, per_epoch, first..end, write)?;
        self.totals.registrations += 1;
        let lifetime = self.sign(Lifetime {
            blob_id: w.blob,
            encoded_size: w.encoded_size,
            start_epoch: first,
            end_epoch: end,
            deletable: w.deletable,
            deleted: false,
            owner: account.0,
            sequence: 0,
        });
        Ok(Granted {
            lifetime,
            cost,
            balance,
        })
    }

    fn live(&self, blob: &BlobId) -> Result<Lifetime, Refusal> {
        let l = self.blobs.get(blob).ok_or(Refusal::Unknown(*blob))?;
        match l.gone_at(self.epoch) {
            None => Ok(*l),
            Some(floe_node::protocol::Gone::Deleted) => Err(Refusal::Deleted(*blob)),
            Some(floe_node::protocol::Gone::Expired { end_epoch }) => Err(Refusal::Expired {
                blob: *blob,
                end: end_epoch,
            }),
        }
    }

    /// Anyone may pay to keep a blob longer (as on Walrus, storage can be bought for others).
    fn extend(
        &mut self,
        account: &AccountId,
        blob: &BlobId,
        epochs: u32,
    ) -> Result<Granted, Refusal> {
        if epochs == 0 {
            return Err(Refusal::NoEpochs);
        }
        let old = self.live(blob)?;
        let end = old.end_epoch.saturating_add(epochs);
        self.check_end(end)?;
        let per_epoch = self.storage_price.saturating_mul(units(old.encoded_size));
        let (cost, balance) = self.charge(account, per_epoch, old.end_epoch..end, 0)?;
        self.totals.extensions += 1;
        let lifetime = self.sign(Lifetime {
            end_epoch: end,
            ..old
        });
        Ok(Granted {
            lifetime,
            cost,
            balance,
        })
    }

    /// The owner of a deletable blob deletes it; nothing is refunded (the fees paid for its
    /// remaining epochs still go to the members those epochs).
    fn delete(&mut self, account: &AccountId, blob: &BlobId) -> Result<Granted, Refusal> {
        let old = self.live(blob)?;
        if old.owner != account.0 {
            return Err(Refusal::NotOwner(*blob));
        }
        if !old.deletable {
            return Err(Refusal::Permanent(*blob));
        }
        self.totals.deletions += 1;
        let lifetime = self.sign(Lifetime {
            deleted: true,
            ..old
        });
        let balance = self.accounts.get(account).map_or(0, |a| a.balance);
        Ok(Granted {
            lifetime,
            cost: 0,
            balance,
        })
    }

    fn settle(&mut self, epoch: u32, subsidy: u64, members: &[(NodeId, u64, bool)]) -> Settlement {
        if epoch <= self.settled_through {
            return self.settlements.get(&epoch).cloned().unwrap_or_default();
        }
        self.settled_through = epoch;
        // this epoch's fees and any older ones left unsettled
        let due: Vec<u32> = self.fees.range(..=epoch).map(|(e, _)| *e).collect();
        let fees: u64 = due.iter().filter_map(|e| self.fees.remove(e)).sum();
        self.totals.subsidies += subsidy;
        let carried_in = std::mem::take(&mut self.carry);
        let pool = fees + subsidy + carried_in;
        let weights: Vec<(NodeId, usize)> = members
            .iter()
            .map(|(id, w, _)| (*id, *w as usize))
            .collect();
        let shares = split(pool, &weights);
        let mut paid = BTreeMap::new();
        let mut given = 0u64;
        for (id, _, passed) in members {
            let part = shares.get(id).copied().unwrap_or(0);
            if *passed && part > 0 {
                *paid.entry(*id).or_default() += part;
                *self.rewards.entry(*id).or_default() += part;
                given += part;
            }
        }
        self.totals.rewarded += given;
        self.carry = pool - given;
        let s = Settlement {
            epoch,
            fees,
            subsidy,
            carried_in,
            paid,
            rolled_over: self.carry,
        };
        self.settlements.insert(epoch, s.clone());
        while self.settlements.len() > SETTLEMENTS_KEPT {
            self.settlements.pop_first();
        }
        s
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Account(AccountState),
    Registered(Vec<Result<Granted, Refusal>>),
    Granted(Granted),
    Refused(Refusal),
    Settled(Settlement),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reg() -> Registry {
        let mut r = Registry::new(
            SigningKey::from_bytes(&[5; 32]),
            MarketSettings {
                max_epochs_ahead: 10,
                faucet_grant: 1000,
            },
        );
        r.apply(&Event::Market {
            epoch: 1,
            storage_price: 10,
            write_price: 3,
        });
        r
    }
    fn acct(b: u8) -> AccountId {
        AccountId([b; 32])
    }
    fn want(b: u8, mib: u64, epochs: u32, deletable: bool) -> Want {
        Want {
            blob: BlobId([b; 32]),
            encoded_size: mib << 20,
            epochs,
            deletable,
        }
    }
    fn fund(r: &mut Registry, a: AccountId, amount: u64) {
        r.apply(&Event::Faucet { account: a, amount });
    }
    fn register(r: &mut Registry, a: AccountId, nonce: u64, w: Want) -> Result<Granted, Refusal> {
        match r.apply(&Event::Register {
            account: a,
            nonce,
            items: vec![w],
        }) {
            Outcome::Registered(mut v) => v.remove(0),
            Outcome::Refused(e) => Err(e),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn cost_is_storage_times_units_times_epochs_plus_write() {
        let mut r = reg();
        fund(&mut r, acct(1), 1000);
        let g = register(&mut r, acct(1), 1, want(1, 3, 2, false)).unwrap();
        // 3 units × 10 × 2 epochs + 3 units × 3
        assert_eq!(g.cost, 69);
        assert_eq!(g.balance, 931);
        let l = g.lifetime.lifetime;
        assert_eq!((l.start_epoch, l.end_epoch, l.sequence), (1, 3, 1));
        assert_eq!(g.lifetime.verify(&r.control_key()), Ok(()));
        assert!(r.balanced());
    }

    #[test]
    fn short_balance_is_refused_and_nothing_is_charged() {
        let mut r = reg();
        fund(&mut r, acct(1), 50);
        let e = register(&mut r, acct(1), 1, want(1, 3, 2, false)).unwrap_err();
        assert_eq!(
            e,
            Refusal::Balance {
                cost: 69,
                balance: 50
            }
        );
        assert_eq!(r.account(&acct(1)).unwrap().balance, 50);
        assert_eq!(r.head(), 0, "nothing signed");
        assert!(r.balanced());
    }

    #[test]
    fn nonces_must_grow_and_limits_hold() {
        let mut r = reg();
        fund(&mut r, acct(1), 10_000);
        register(&mut r, acct(1), 5, want(1, 1, 1, false)).unwrap();
        assert!(matches!(
            register(&mut r, acct(1), 5, want(2, 1, 1, false)),
            Err(Refusal::Nonce { .. })
        ));
        assert_eq!(
            register(&mut r, acct(1), 6, want(2, 1, 0, false)),
            Err(Refusal::NoEpochs)
        );
        assert!(matches!(
            register(&mut r, acct(1), 7, want(2, 1, 11, false)),
            Err(Refusal::TooFar { .. })
        ));
        // the maximum is bought from the first billed epoch: the next one once the current
        // epoch's fees were paid out (an epoch change under way)
        register(&mut r, acct(1), 8, want(3, 1, 10, false)).unwrap();
        let epoch = r.epoch;
        r.apply(&Event::Settle {
            epoch,
            subsidy: 0,
            members: vec![],
        });
        assert_eq!(r.first_billed_epoch(), epoch + 1);
        let g = register(&mut r, acct(1), 9, want(4, 1, 10, false)).unwrap();
        assert_eq!(g.lifetime.lifetime.end_epoch, epoch + 11);
        assert!(matches!(
            register(&mut r, acct(1), 10, want(5, 1, 11, false)),
            Err(Refusal::TooFar { .. })
        ));
    }

    #[test]
    fn extend_delete_and_their_refusals() {
        let mut r = reg();
        fund(&mut r, acct(1), 10_000);
        fund(&mut r, acct(2), 10_000);
        let b = BlobId([1; 32]);
        register(&mut r, acct(1), 1, want(1, 1, 2, true)).unwrap();
        register(&mut r, acct(1), 2, want(2, 1, 2, false)).unwrap();
        let ext = |r: &mut Registry, a, n, blob, epochs| {
            r.apply(&Event::Extend {
                account: a,
                nonce: n,
                blob,
                epochs,
            })
        };
        let del = |r: &mut Registry, a, n, blob| {
            r.apply(&Event::Delete {
                account: a,
                nonce: n,
                blob,
            })
        };
        let Outcome::Granted(g) = ext(&mut r, acct(2), 1, b, 3) else {
            panic!()
        };
        assert_eq!((g.cost, g.lifetime.lifetime.end_epoch), (30, 6));
        assert_eq!(
            del(&mut r, acct(2), 2, b),
            Outcome::Refused(Refusal::NotOwner(b))
        );
        assert_eq!(
            del(&mut r, acct(1), 3, BlobId([2; 32])),
            Outcome::Refused(Refusal::Permanent(BlobId([2; 32])))
        );
        let Outcome::Granted(g) = del(&mut r, acct(1), 4, b) else {
            panic!()
        };
        assert!(g.lifetime.lifetime.deleted);
        assert_eq!(
            ext(&mut r, acct(1), 5, b, 1),
            Outcome::Refused(Refusal::Deleted(b))
        );
        // another account cannot take over a deletable blob; a permanent one is shared
        register(&mut r, acct(1), 6, want(3, 1, 2, true)).unwrap();
        assert_eq!(
            register(&mut r, acct(2), 3, want(3, 1, 2, true)),
            Err(Refusal::TakenDeletable(BlobId([3; 32])))
        );
        let g = register(&mut r, acct(2), 4, want(2, 1, 1, false)).unwrap();
        assert_eq!(g.cost, 0, "already stored long enough");
        assert!(r.balanced());
    }

    #[test]
    fn an_expired_blob_is_refused_and_may_be_registered_again() {
        let mut r = reg();
        fund(&mut r, acct(1), 10_000);
        register(&mut r, acct(1), 1, want(1, 1, 1, false)).unwrap();
        r.apply(&Event::Market {
            epoch: 2,
            storage_price: 10,
            write_price: 3,
        });
        let b = BlobId([1; 32]);
        assert!(!r.live_or_unknown(&b, 2));
        assert_eq!(
            r.apply(&Event::Extend {
                account: acct(1),
                nonce: 2,
                blob: b,
                epochs: 1
            }),
            Outcome::Refused(Refusal::Expired { blob: b, end: 2 })
        );
        let g = register(&mut r, acct(1), 3, want(1, 1, 1, false)).unwrap();
        assert_eq!(g.lifetime.lifetime.start_epoch, 2);
    }

    #[test]
    fn a_failing_member_earns_nothing_and_its_part_rolls_over() {
        let mut r = reg();
        fund(&mut r, acct(1), 10_000);
        register(&mut r, acct(1), 1, want(1, 1, 1, false)).unwrap(); // 13 into epoch 1
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let Outcome::Settled(s) = r.apply(&Event::Settle {
            epoch: 1,
            subsidy: 87,
            members: vec![(a, 3, true), (b, 1, false)],
        }) else {
            panic!()
        };
        assert_eq!((s.fees, s.paid[&a], s.rolled_over), (13, 75, 25));
        // settled once, however often replayed
        assert_eq!(
            r.apply(&Event::Settle {
                epoch: 1,
                subsidy: 87,
                members: vec![]
            }),
            Outcome::Settled(s)
        );
        // registrations now pay from epoch 2 on (epoch 1 is paid out)
        assert_eq!(r.first_billed_epoch(), 2);
        assert!(r.balanced());
    }

    #[test]
    fn replay_gives_the_same_state_and_signatures() {
        let mut a = reg();
        let mut b = reg();
        let evs = vec![
            Event::Faucet {
                account: acct(1),
                amount: 500,
            },
            Event::Register {
                account: acct(1),
                nonce: 1,
                items: vec![want(1, 2, 3, true), want(2, 1, 1, false)],
            },
        ];
        for e in &evs {
            a.apply(e);
        }
        let json: Vec<String> = evs
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        for j in &json {
            b.apply(&serde_json::from_str(j).unwrap());
        }
        assert_eq!(a.log_from(1, 10), b.log_from(1, 10));
        assert_eq!(a.totals(), b.totals());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(u8, u8, u64, u32, bool),
        Extend(u8, u8, u32),
        Delete(u8, u8),
        EndEpoch(Vec<(u8, u64, bool)>, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 0u8..6, 1u64..50, 0u32..6, any::<bool>())
                .prop_map(|(a, b, m, e, d)| Op::Register(a, b, m, e, d)),
            (0u8..3, 0u8..6, 0u32..4).prop_map(|(a, b, e)| Op::Extend(a, b, e)),
            (0u8..3, 0u8..6).prop_map(|(a, b)| Op::Delete(a, b)),
            (
                prop::collection::vec((0u8..5, 0u64..20, any::<bool>()), 0..5),
                0u64..500
            )
                .prop_map(|(m, s)| Op::EndEpoch(m, s)),
        ]
    }

    proptest! {
        /// Σ paid in = Σ rewarded + Σ rolled over + Σ held for future epochs, after any mix of
        /// registrations, extensions, deletions and challenge outcomes.
        #[test]
        fn the_ledger_balances(ops in prop::collection::vec(op(), 1..80)) {
            let mut r = reg();
            for a in 0..3 {
                fund(&mut r, acct(a), 20_000);
            }
            let mut epoch = 1u32;
            for (i, o) in ops.into_iter().enumerate() {
                let nonce = i as u64 + 1;
                match o {
                    Op::Register(a, b, mib, epochs, d) => {
                        r.apply(&Event::Register { account: acct(a), nonce, items: vec![want(b, mib, epochs, d)] });
                    }
                    Op::Extend(a, b, epochs) => {
                        r.apply(&Event::Extend { account: acct(a), nonce, blob: BlobId([b; 32]), epochs });
                    }
                    Op::Delete(a, b) => {
                        r.apply(&Event::Delete { account: acct(a), nonce, blob: BlobId([b; 32]) });
                    }
                    Op::EndEpoch(members, subsidy) => {
                        let mut seen = std::collections::BTreeSet::new();
                        let members: Vec<(NodeId, u64, bool)> = members
                            .into_iter()
                            .filter(|(n, _, _)| seen.insert(*n))
                            .map(|(n, w, p)| (NodeId([n; 32]), w, p))
                            .collect();
                        r.apply(&Event::Settle { epoch, subsidy, members });
                        epoch += 1;
                        r.apply(&Event::Market { epoch, storage_price: 10, write_price: 3 });
                    }
                }
                prop_assert!(r.balanced(), "{:?}", r.totals());
                let t = r.totals();
                prop_assert_eq!(r.rewards().values().sum::<u64>(), t.rewarded);
            }
        }
    }
}
