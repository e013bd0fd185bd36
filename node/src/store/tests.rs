use super::*;
use crate::codec::{encode, EncodingParams};

#[test]
fn store_reopen_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let enc = encode(&[5u8; 10_000], EncodingParams::new(7).unwrap()).unwrap();
    let id = enc.blob_id();
    {
        let s = BlobStore::open(dir.path(), None).unwrap();
        assert!(!s.put_metadata(id, enc.metadata()).unwrap());
        assert!(s.put_metadata(id, enc.metadata()).unwrap());
        let pair = enc.pair(2);
        s.put_sliver(id, 2, &pair.primary).unwrap();
        s.put_sliver(id, 2, &pair.secondary).unwrap();
        assert!(s.entry(&id).unwrap().has_pair(2));
    }
    let s = BlobStore::open(dir.path(), None).unwrap();
    assert_eq!(s.metadata(&id).as_deref(), Some(enc.metadata()));
    assert_eq!(s.blob_count(), 1);
    assert_eq!(
        s.get_sliver(&id, 2, Axis::Primary).unwrap().unwrap(),
        enc.pair(2).primary
    );
    // a stored value that fails its checksum is detected, dropped, and left to recovery
    let key = keys::sliver_key(&id, 2, AxisKey::Secondary);
    let mut v = s.parts.slivers.get(key).unwrap().unwrap().to_vec();
    let at = v.len() - 3;
    v[at] ^= 0x40;
    s.parts.slivers.insert(key, v).unwrap();
    assert!(matches!(
        s.get_sliver(&id, 2, Axis::Secondary),
        Err(StoreError::Corrupt(_))
    ));
    assert!(!s.entry(&id).unwrap().has_pair(2));
    assert!(s.get_sliver(&id, 2, Axis::Secondary).unwrap().is_none());
}

#[test]
fn capacity_limit_refuses_writes_but_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let enc = encode(&[1u8; 50_000], EncodingParams::new(7).unwrap()).unwrap();
    let id = enc.blob_id();
    let s = BlobStore::open(dir.path(), Some(20_000)).unwrap();
    s.put_metadata(id, enc.metadata()).unwrap();
    s.put_sliver(id, 0, &enc.pair(0).primary).unwrap();
    let err = s.put_sliver(id, 0, &enc.pair(0).secondary).unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err}");
    assert!(s.get_sliver(&id, 0, Axis::Primary).unwrap().is_some());
}

#[test]
fn concurrent_identical_writes_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let enc = encode(&[3u8; 40_000], EncodingParams::new(7).unwrap()).unwrap();
    let id = enc.blob_id();
    let s = Arc::new(BlobStore::open(dir.path(), None).unwrap());
    s.put_metadata(id, enc.metadata()).unwrap();
    let before = s.used_bytes();
    let pair = enc.pair(1);
    let fresh: usize = std::thread::scope(|t| {
        let hs: Vec<_> = (0..16)
            .map(|_| {
                let s = s.clone();
                let sl = pair.primary.clone();
                t.spawn(move || !s.put_sliver(id, 1, &sl).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
    });
    assert_eq!(fresh, 1, "exactly one write stored it");
    let one = pair.primary.to_bytes().len() as u64 + 32 + OBJECT_OVERHEAD;
    assert_eq!(s.used_bytes() - before, one);
}

#[test]
fn large_slivers_in_files_and_uncertified_blobs_expire() {
    let dir = tempfile::tempdir().unwrap();
    // 7 shards, 900 kB: slivers above LARGE_SLIVER
    let enc = encode(&vec![9u8; 900_000], EncodingParams::new(7).unwrap()).unwrap();
    let id = enc.blob_id();
    let s = BlobStore::open_with(
        dir.path(),
        StoreLimits {
            capacity: None,
            uncertified_quota: Some(8 << 20),
        },
    )
    .unwrap();
    // a certified blob: never expired, its bytes stay counted
    let cert = Certificate {
        epoch: 1,
        blob_id: BlobId([1; 32]),
        signers: vec![],
    };
    s.put_certificate(&cert).unwrap();
    let certified_bytes = s.used_bytes();
    s.put_metadata(id, enc.metadata()).unwrap();
    let p = enc.pair(0);
    assert!(p.primary.data.len() > LARGE_SLIVER);
    let results = s.put_slivers(&[(id, 0, &p.primary), (id, 0, &p.secondary)]);
    assert!(
        results.iter().all(|r| matches!(r, Ok(false))),
        "{results:?}"
    );
    assert_eq!(
        s.get_sliver(&id, 0, Axis::Primary).unwrap().unwrap(),
        p.primary
    );
    assert!(s.uncertified_bytes() > 0);
    let file = dir.path().join("large").join(hex::encode(id.as_bytes()));
    assert!(file.exists());
    // not expired yet
    assert_eq!(s.expire_uncertified(now_secs() - 60, 100).unwrap().0, 0);
    let used = s.used_bytes();
    assert_eq!(
        s.expire_uncertified(now_secs() + 1, 100).unwrap(),
        (1, used - certified_bytes)
    );
    assert_eq!(
        (s.used_bytes(), s.uncertified_bytes(), s.blob_count()),
        (certified_bytes, 0, 1)
    );
    assert!(!file.exists());
    assert!(s.metadata(&id).is_none());
    assert!(s.entry(&id).is_none());
}

#[test]
fn certified_listing_and_pending_are_range_scans() {
    let dir = tempfile::tempdir().unwrap();
    let s = BlobStore::open(dir.path(), None).unwrap();
    for i in 0..10u8 {
        let cert = Certificate {
            epoch: 1,
            blob_id: BlobId([i; 32]),
            signers: vec![],
        };
        assert!(!s.put_certificate(&cert).unwrap());
    }
    assert_eq!(s.certified_count(), 10);
    let page = s.certified_page(Some(BlobId([3; 32])), 4);
    assert_eq!(
        page.iter().map(|(id, _)| id.0[0]).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert_eq!(s.pending_page(None, 100).len(), 10);
    s.clear_pending(vec![BlobId([0; 32])]).unwrap();
    assert_eq!(s.pending_page(None, 100).len(), 9);
    assert!(s.repend_all(2).unwrap());
    assert!(!s.repend_all(2).unwrap());
    assert_eq!(s.pending_page(None, 100).len(), 10);
    // certified blobs never expire
    assert_eq!(s.expire_uncertified(now_secs() + 10, 100).unwrap().0, 0);
}

#[test]
fn a_certificate_for_a_complete_blob_skips_the_pending_list() {
    let dir = tempfile::tempdir().unwrap();
    let s = BlobStore::open(dir.path(), None).unwrap();
    let cert = |i: u8| Certificate {
        epoch: 1,
        blob_id: BlobId([i; 32]),
        signers: vec![],
    };
    // the node holds its slivers: certified, nothing for recovery to look at
    assert!(!s.put_certificate_of(&cert(1), true).unwrap());
    // it lacks some: recovery must look
    assert!(!s.put_certificate_of(&cert(2), false).unwrap());
    assert_eq!(s.certified_count(), 2);
    assert!(s.is_certified(&BlobId([1; 32])) && s.is_certified(&BlobId([2; 32])));
    assert!(!s.is_certified(&BlobId([3; 32])));
    assert_eq!(s.pending_page(None, 100), vec![BlobId([2; 32])]);
    // an epoch change puts every certified blob back, the complete one included
    assert!(s.repend_all(2).unwrap());
    assert_eq!(s.pending_page(None, 100).len(), 2);
}

/// Engine sizes small enough to reach the journal limit in seconds.
fn small_engine(release_pinned_journals: bool) -> EngineTuning {
    EngineTuning {
        max_journal_bytes: MIN_JOURNAL_LIMIT,
        max_write_buffer_bytes: 64 << 20,
        max_memtable_bytes: 1 << 20,
        release_pinned_journals,
        ..EngineTuning::default()
    }
}

/// Write inline slivers of fresh blobs until `bytes` went through the journal; None when every
/// write returned within `deadline`, else the number of writes done before one did not.
fn write_slivers(
    s: &Arc<BlobStore>,
    first: u64,
    bytes: usize,
    deadline: std::time::Duration,
) -> Option<usize> {
    let enc = encode(&vec![7u8; 150_000], EncodingParams::new(7).unwrap()).unwrap();
    let sliver = enc.pair(0).primary.clone();
    let per = sliver.data.len();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = s.clone();
    std::thread::spawn(move || {
        for i in 0..(bytes / per + 1) as u64 {
            let mut raw = [0x3cu8; 32];
            raw[..8].copy_from_slice(&(first + i).to_be_bytes());
            s2.put_sliver(BlobId(raw), 0, &sliver).unwrap();
            if tx.send(i).is_err() {
                return;
            }
        }
    });
    let mut done = 0;
    loop {
        match rx.recv_timeout(deadline) {
            Ok(i) => done = i as usize + 1,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Some(done),
        }
    }
}

/// A store that crashed holding many sealed journals none of which was flushed (its engine ran
/// without flush threads: the state a busy node can be killed in), opened again.
fn reopen_after_a_crash(dir: &std::path::Path, release: bool) -> Arc<BlobStore> {
    {
        let crashed = EngineTuning {
            max_journal_bytes: 4 << 30,
            flush_workers: 0,
            ..small_engine(release)
        };
        let s = Arc::new(BlobStore::open_tuned(dir, StoreLimits::default(), crashed).unwrap());
        // every MiB of slivers rotates a memtable, sealing a journal
        assert_eq!(
            write_slivers(&s, 0, 24 << 20, std::time::Duration::from_secs(60)),
            None
        );
        assert!(s.parts.keyspace.journal_count() > 12);
    }
    Arc::new(BlobStore::open_tuned(dir, StoreLimits::default(), small_engine(release)).unwrap())
}

#[test]
fn recovered_flush_tasks_are_drained() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen_after_a_crash(dir.path(), true);
    let stuck = write_slivers(&s, 1 << 32, 8 << 20, std::time::Duration::from_secs(30));
    let r = s.stall_report();
    assert_eq!(stuck, None, "writes halted for good after recovery: {r:?}");
    assert!(r.journal_releases > 0, "{r:?}");
    // every recovered slivers is still there
    let enc = encode(&vec![7u8; 150_000], EncodingParams::new(7).unwrap()).unwrap();
    let mut raw = [0x3cu8; 32];
    raw[..8].copy_from_slice(&3u64.to_be_bytes());
    assert_eq!(
        s.get_sliver(&BlobId(raw), 0, Axis::Primary)
            .unwrap()
            .unwrap(),
        enc.pair(0).primary
    );
}

/// The reproduction is honest: without the keeper the same store halts writes for good (the
/// store is leaked: its writer never returns).
#[test]
fn without_the_keeper_recovered_flush_tasks_halt_writes_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen_after_a_crash(dir.path(), false);
    let stuck = write_slivers(&s, 1 << 32, 8 << 20, std::time::Duration::from_secs(30));
    let r = s.stall_report();
    assert!(stuck.is_some(), "the writes finished without a halt: {r:?}");
    assert!(r.journal_bytes > r.journal_limit, "{r:?}");
    let (_, why) = r.current.clone().expect("the halt is reported as a stall");
    assert!(why.contains("journals"), "{why}");
    std::mem::forget(s);
    std::mem::forget(dir);
}

#[test]
fn lifetimes_keep_the_newest_and_collection_frees_all_but_the_lifetime() {
    use crate::protocol::{Certificate, Lifetime};
    let dir = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
    let enc = encode(&[6u8; 20_000], EncodingParams::new(7).unwrap()).unwrap();
    let other = encode(&[7u8; 20_000], EncodingParams::new(7).unwrap()).unwrap();
    let id = enc.blob_id();
    let life = |blob, end, deleted, seq| {
        Lifetime {
            blob_id: blob,
            encoded_size: 1,
            start_epoch: 1,
            end_epoch: end,
            deletable: true,
            deleted,
            owner: [1; 32],
            sequence: seq,
        }
        .sign(&key)
    };
    let s = BlobStore::open(dir.path(), None).unwrap();
    assert!(s.put_lifetime(&life(id, 3, false, 5)).unwrap());
    // an older one (a late page of the log) does not replace it; a newer one does
    assert!(!s.put_lifetime(&life(id, 9, false, 4)).unwrap());
    assert_eq!(s.lifetime(&id).unwrap().lifetime.end_epoch, 3);
    assert!(s.put_lifetime(&life(id, 4, false, 6)).unwrap());
    assert_eq!(s.gone_page(3, 10), vec![]);
    assert_eq!(s.gone_page(4, 10), vec![(4, id)]);
    // a certified blob with slivers, and another blob that stays
    s.put_metadata(id, enc.metadata()).unwrap();
    let pair = enc.pair(1);
    s.put_sliver(id, 1, &pair.primary).unwrap();
    s.put_sliver(id, 1, &pair.secondary).unwrap();
    s.put_certificate(&Certificate {
        epoch: 1,
        blob_id: id,
        signers: vec![],
    })
    .unwrap();
    s.put_lifetime(&life(other.blob_id(), 10, false, 7))
        .unwrap();
    s.put_metadata(other.blob_id(), other.metadata()).unwrap();
    let used = s.used_bytes();
    // deleted: collected first (under epoch 0), whatever its end
    assert!(s.put_lifetime(&life(id, 4, true, 8)).unwrap());
    assert_eq!(s.gone_page(1, 10), vec![(0, id)]);
    let (blobs, freed) = s.collect(vec![id]).unwrap();
    assert_eq!(blobs, 1);
    assert!(freed > 0 && s.used_bytes() == used - freed);
    assert!(s.entry(&id).is_none() && s.metadata(&id).is_none());
    assert_eq!(s.certified_count(), 0);
    assert_eq!(s.blob_count(), 1);
    assert!(s.certified().is_empty());
    assert!(
        s.lifetime(&id).unwrap().lifetime.deleted,
        "the lifetime stays"
    );
    assert_eq!(s.gone_page(100, 10), vec![(10, other.blob_id())]);
    // and after a reopen
    drop(s);
    let s = BlobStore::open(dir.path(), None).unwrap();
    assert!(s.lifetime(&id).unwrap().lifetime.deleted);
    assert_eq!(s.blob_count(), 1);
    assert_eq!(s.used_bytes(), used - freed);
}

#[test]
fn put_blob_stores_a_blob_in_one_commit_and_its_slivers_only_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let enc = encode(&[7u8; 2_000], EncodingParams::new(100).unwrap()).unwrap();
    let id = enc.blob_id();
    let (p0, p1) = (enc.pair(0), enc.pair(1));
    let slivers = [
        (id, 0, &p0.primary, None),
        (id, 0, &p0.secondary, None),
        (id, 1, &p1.primary, None),
    ];
    // room for a sliver, not for the metadata (2n hashes): nothing of the blob is kept
    let md_len = enc.metadata().to_bytes().len() as u64;
    let sliver_len = p0.primary.to_bytes().len() as u64;
    assert!(
        sliver_len + 2 * OBJECT_OVERHEAD < md_len,
        "{sliver_len} vs {md_len}"
    );
    {
        let small = tempfile::tempdir().unwrap();
        let s = BlobStore::open(small.path(), Some(md_len)).unwrap();
        let put = s.put_blob(id, None, enc.metadata(), &slivers);
        assert!(
            matches!(put.metadata, Err(StoreError::Full { .. })),
            "{put:?}"
        );
        assert!(put.slivers.iter().all(|r| r.is_err()), "{put:?}");
        assert!(s.entry(&id).is_none_or(|e| e.slivers.is_empty()));
        assert_eq!(s.used_bytes(), 0);
    }
    let s = BlobStore::open(dir.path(), None).unwrap();
    let generation = s.generation();
    let put = s.put_blob(id, None, enc.metadata(), &slivers);
    assert!(put.lifetime.is_none());
    assert!(matches!(put.metadata, Ok(false)));
    assert!(
        put.slivers.iter().all(|r| matches!(r, Ok(false))),
        "{put:?}"
    );
    assert_eq!(s.generation(), generation + 1, "one commit");
    let e = s.entry(&id).unwrap();
    assert!(e.metadata.is_some() && e.has_pair(0) && !e.has_pair(1));
    // again, with the missing sliver: the rest is reported as already held
    let all = [(id, 0, &p0.primary, None), (id, 1, &p1.secondary, None)];
    let put = s.put_blob(id, None, enc.metadata(), &all);
    assert!(matches!(put.metadata, Ok(true)));
    assert!(matches!(put.slivers[..], [Ok(true), Ok(false)]), "{put:?}");
    assert!(s.entry(&id).unwrap().has_pair(1));
    assert_eq!(s.shard_counts().values().sum::<u64>(), 4);
}

#[test]
fn lifetimes_and_their_log_position_in_one_commit() {
    use crate::protocol::Lifetime;
    let dir = tempfile::tempdir().unwrap();
    let s = BlobStore::open(dir.path(), None).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let l = |b: u8, sequence| {
        Lifetime {
            blob_id: BlobId([b; 32]),
            encoded_size: 10,
            start_epoch: 1,
            end_epoch: 3,
            deletable: false,
            deleted: false,
            owner: [0; 32],
            sequence,
        }
        .sign(&key)
    };
    let generation = s.generation();
    let r = s.put_lifetimes_at(&[l(1, 5), l(2, 6)], Some(6));
    assert!(matches!(r[..], [Ok(true), Ok(true)]), "{r:?}");
    assert_eq!(s.lifetime_seq(), 6);
    assert_eq!(s.generation(), generation + 1, "one commit");
    assert_eq!(s.lifetime(&BlobId([2; 32])), Some(l(2, 6)));
    // an older one is not applied; the position alone moves
    let r = s.put_lifetimes_at(&[l(1, 4)], Some(7));
    assert!(matches!(r[..], [Ok(false)]), "{r:?}");
    assert_eq!(s.lifetime_seq(), 7);
    assert_eq!(s.lifetime(&BlobId([1; 32])), Some(l(1, 5)));
}
