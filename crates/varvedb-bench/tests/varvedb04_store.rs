//! A store written by the published varvedb 0.4.2 is refused by 0.5 with a typed error, and
//! left as it was: what the README's "Coming from varvedb 0.4" promises.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use varvedb::{Error, Storage, StorageConfig};
use varvedb_bench::event::event;
use varvedb_bench::peers::VarveDb04;
use varvedb_bench::store::BenchStore;

#[test]
fn a_varvedb_0_4_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old");
    {
        let old = VarveDb04::open(&path).unwrap();
        for i in 0..3u64 {
            old.append(1, 0, &[event(i)]).unwrap();
        }
    }
    let before = std::fs::read(path.join("data.mdb")).unwrap();
    for open in [Storage::open_existing, Storage::open] {
        let refused = open(StorageConfig {
            path: path.clone(),
            ..Default::default()
        })
        .map(drop)
        .expect_err("a 0.4 store opened as a 0.5 one");
        assert!(
            matches!(
                refused,
                Error::InvalidStore { .. } | Error::UnsupportedFormat { .. }
            ),
            "{refused:?}"
        );
    }
    assert_eq!(std::fs::read(path.join("data.mdb")).unwrap(), before);
}
