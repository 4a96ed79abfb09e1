//! The harness runs every workload against every peer, and every peer reads back what it wrote
//! (the read workloads check counts and sums).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use varvedb_bench::{Options, peers, run};

#[test]
fn a_tiny_run_fills_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        runs: 1,
        single_appends: 5,
        writers: 4,
        appends_per_writer: 3,
        batches: 2,
        async_tasks: 8,
        async_appends_per_task: 2,
        read_events: 1_050,
        point_reads: 200,
        stream_reads: 3,
        random_streams: 1_000,
        large_batches: 1,
        huge_appends: 2,
        large_read_events: 30,
        huge_read_events: 2,
        ..Options::quick(dir.path().join("stores"))
    };
    let report = run(&options).unwrap();
    let ids: Vec<&str> = report.rows.iter().map(|r| r.id.as_str()).collect();
    for id in [
        "a_hot",
        "a_random",
        "b_hot",
        "g_p50",
        "g_p99",
        "g_p999",
        "b_random",
        "async",
        "c100_hot",
        "c1000_hot",
        "c100_random",
        "c1000_random",
        "c1000_10k",
        "d_scan",
        "e_point",
        "f_stream",
        "h10k_append",
        "h1m_append",
        "h10k_scan",
        "h1m_scan",
        "h_dedup",
    ] {
        assert!(ids.contains(&id), "row {id} is missing");
    }
    // Repeated payloads are stored once: VarveDB's disk use per event is a fraction of a
    // store that keeps every copy.
    let dedup = report.rows.iter().find(|r| r.id == "h_dedup").unwrap();
    let bytes = |peer: &str| {
        dedup
            .cells
            .iter()
            .find(|c| c.peer == peer)
            .and_then(|c| c.median)
            .unwrap()
    };
    assert!(
        bytes("VarveDB") * 2.0 < bytes("SQLite"),
        "{} vs {}",
        bytes("VarveDB"),
        bytes("SQLite")
    );
    for row in &report.rows {
        assert_eq!(row.cells.len(), peers::ALL.len(), "{}", row.id);
        for cell in &row.cells {
            // A figure, or n/a with the reason the peer's API cannot express the workload.
            assert!(
                cell.median.is_some_and(|m| m > 0.0) || cell.note.is_some(),
                "{} / {}: neither a figure nor a reason",
                row.id,
                cell.peer
            );
        }
        // VarveDB and UmaDB can express every workload.
        for peer in ["VarveDB", "UmaDB"] {
            let cell = row.cells.iter().find(|c| c.peer == peer).unwrap();
            assert!(cell.median.is_some(), "{peer} has no figure for {}", row.id);
        }
    }
    let md = report.markdown();
    for peer in peers::ALL {
        assert!(md.contains(peer), "{peer} missing from the table");
    }
    assert!(md.contains("n/a"));
    let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), report.rows.len());
    // The stores are removed as each workload finishes.
    let left = std::fs::read_dir(options.dir.join("VarveDB"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn an_unknown_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        peers: vec!["NoSuchDB".into()],
        ..Options::quick(dir.path().into())
    };
    let err = run(&options).unwrap_err().to_string();
    assert!(err.contains("NoSuchDB"), "{err}");
}
