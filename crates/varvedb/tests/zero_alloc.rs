//! Reads allocate nothing per event: a counting allocator watches `get`, `read_all` and
//! `read_stream` over many events.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use varvedb::{ExpectedVersion, Reader, Writer};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn reads_do_not_allocate_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let writer = Writer::<Deposited>::new(storage.clone());
    let batch: Vec<_> = (0..1000).map(deposit).collect();
    for stream in 0..5u128 {
        writer
            .append_batch(stream, ExpectedVersion::NoStream, &batch)
            .unwrap();
    }
    let reader = Reader::<Deposited>::new(storage.clone());
    let txn = storage.read_txn().unwrap();

    let before = allocations();
    let mut sum = 0u64;
    for e in reader.read_all(&txn, 1) {
        sum += e.unwrap().amount.to_native();
    }
    let scan = allocations() - before;
    assert_eq!(sum, 5 * (0..1000).sum::<u64>());
    // The iterator itself may allocate once (its boxed cursor); 5,000 events may not.
    assert!(
        scan <= 4,
        "read_all over 5,000 events allocated {scan} times"
    );

    let before = allocations();
    let mut n = 0;
    for e in reader.read_stream(&txn, 3, 1) {
        n += u64::from(e.unwrap().version() > 0);
    }
    let stream = allocations() - before;
    assert_eq!(n, 1000);
    // The chunk buffer (128 versions, then grown once to 1,024) and a cursor per chunk (the
    // walk over `prev` links steps through neighbours in the log): two chunks here.
    assert!(
        stream <= 4,
        "read_stream over 1,000 events allocated {stream} times"
    );

    let before = allocations();
    for seq in 1..=5000 {
        sum = sum.wrapping_add(reader.get(&txn, seq).unwrap().unwrap().amount.to_native());
    }
    let gets = allocations() - before;
    assert!(gets == 0, "5,000 gets allocated {gets} times");
}
