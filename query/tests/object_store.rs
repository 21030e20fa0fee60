//! The store over a shared object store: two writing nodes (one cell's windows split across
//! both) and a reader that wrote nothing answer exactly the union of the spans in every tier,
//! at every stage of the writers' tiers, after a restart, and past a damaged object. Runs on
//! `object_store`'s in-memory store and, with `s3s-fs` installed, on a real S3 server.

use cellpilot_core::store::RollupSink;
use cellpilot_query::storage::{S3Settings, Storage};
use cellpilot_query::tier::{HOUR_MS, Tier};
use cellpilot_query::{RollupStore, StoreSettings};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::sync::Arc;

mod support;
use support::{FINE, LATENESS, T0, Truth, check, windows};

fn open(storage: Storage) -> RollupStore {
    RollupStore::open(StoreSettings {
        storage: Arc::new(storage),
        fine_ms: FINE,
        lateness_ms: LATENESS,
        retention_ms: [i64::MAX / 4; 3],
    })
    .unwrap()
}

/// Two writers and a reader over stores `make(node)` opens; checks the reader at each stage.
fn two_writers_one_reader(make: &dyn Fn(&str) -> Storage) {
    let mut truth: BTreeMap<String, Truth> = BTreeMap::new();
    let (a, b) = (open(make("ingest-a")), open(make("ingest-b")));
    let reader = open(make("query-1"));
    let (mut ra, mut rb) = (StdRng::seed_from_u64(11), StdRng::seed_from_u64(12));
    // 26 hours in 20-minute steps: each stage leaves the writers' tiers at a different point
    // (finest files only, 5-minute files, a first daily file) and the reader must still agree.
    let step = 20 * 60_000;
    let end = T0 + 26 * HOUR_MS;
    let mut at = T0;
    while at < end {
        for (store, rng) in [(&a, &mut ra), (&b, &mut rb)] {
            let mut once = Some(windows(rng, at, at + step, &mut truth));
            store.close(at + step + LATENESS, &mut || Ok(once.take())).unwrap();
        }
        at += step;
        if [2, 25].contains(&((at - T0) / HOUR_MS)) && (at - T0) % HOUR_MS == step || at == end {
            reader.refresh().unwrap();
            // What the writers hold in memory (not yet in a file) is not the reader's to see:
            // check only up to the end of the last finest file both wrote.
            let upto = a.persisted_until().min(b.persisted_until());
            let mut shown: BTreeMap<String, Truth> = BTreeMap::new();
            let (mut sa, mut sb) = (StdRng::seed_from_u64(11), StdRng::seed_from_u64(12));
            let mut t = T0;
            while t < upto {
                windows(&mut sa, t, t + step, &mut shown);
                windows(&mut sb, t, t + step, &mut shown);
                t += step;
            }
            assert_eq!(t, upto, "files cover whole steps");
            check(&reader, &shown, T0, upto);
        }
    }
    let (nodes, files) = reader.refresh().unwrap();
    assert_eq!(nodes, 2, "the reader sees both writers and not itself");
    assert!(files > 0);
    // A writer restarted on the same store rebuilds its coarse rows from its own files only.
    drop(a);
    let a = open(make("ingest-a"));
    b.refresh().unwrap();
    let upto = a.persisted_until().min(b.persisted_until());
    assert_eq!(upto, end, "every bucket of the 26 hours is written");
    check(&a, &truth, T0, end);
    check(&b, &truth, T0, end);
    check(&reader, &truth, T0, end);
}

#[test]
fn nodes_share_an_in_memory_object_store() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    two_writers_one_reader(&|node| Storage::object(store.clone(), "cluster/one", node).unwrap());
}

#[test]
fn a_damaged_object_is_moved_aside_and_the_rest_answers() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let writer = open(Storage::object(store.clone(), "", "w").unwrap());
    let mut truth = BTreeMap::new();
    let mut once = Some(windows(&mut StdRng::seed_from_u64(3), T0, T0 + HOUR_MS, &mut truth));
    writer.close(T0 + HOUR_MS + LATENESS, &mut || Ok(once.take())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let key = object_store::path::Path::from(format!("nodes/w/rollups/10s/{T0}-{}.parquet", T0 + 300_000));
    rt.block_on(object_store::ObjectStoreExt::put(store.as_ref(), &key, b"PAR1 not parquet PAR1".to_vec().into()))
        .unwrap();
    let reader = open(Storage::object(store.clone(), "", "r").unwrap());
    let rows = reader.scan(cellpilot_query::files::Table::Rollups, Tier::Fine, T0, T0 + HOUR_MS, None).unwrap();
    let n: usize = rows.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 2 * (HOUR_MS - 300_000) as usize / FINE as usize, "every window but the damaged file's");
    let moved = rt.block_on(object_store::ObjectStoreExt::get(
        store.as_ref(),
        &object_store::path::Path::from(format!("quarantine/{key}")),
    ));
    assert!(moved.is_ok(), "the damaged object is under quarantine/");
}

#[test]
#[ignore = "needs s3s-fs"]
fn nodes_share_an_s3_bucket() {
    use cellpilot_query::local_s3::{ACCESS_KEY, LocalS3, SECRET_KEY};
    let server = LocalS3::start("rollups").unwrap();
    let settings = S3Settings {
        url: "s3://rollups/cluster".into(),
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
    };
    two_writers_one_reader(&|node| Storage::s3(&settings, node).unwrap());
}
