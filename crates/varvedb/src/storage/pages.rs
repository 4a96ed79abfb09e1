//! The page check: what LMDB would trust in a data file, checked before LMDB maps it.
//!
//! LMDB follows its own pages without bounds checks: a node offset past the page, a child page
//! number past the file or a cycle of branch pages makes it read outside its map or loop, and a
//! bit flipped on disk crashes the process (SIGSEGV in `mdb_node_search`, found by the
//! `open_store` fuzz target). This module reads the file with plain reads, never through the
//! map, and walks every tree reachable from both meta pages: the free list, the main tree and
//! each named database. For every page it checks what LMDB relies on:
//!
//! - the page number in its header is the page's own, and its kind is the one its parent
//!   expects (branch or leaf at the depth the tree's record gives, overflow where a node says);
//! - `PAGEHDRSZ ≤ lower ≤ upper ≤ page size`, so the node offsets and the free space fit;
//! - each node offset lies in `[upper, page size)`, is even, and its node (header, key, and a
//!   leaf's inline data) ends inside the page;
//! - a branch node's child, an overflow run and a tree's root lie inside the file;
//! - no page is reached twice from one meta page (no cycle, no shared subtree);
//! - each page's flags exactly its kind's (no in-memory flag such as `P_DIRTY`, which would make
//!   LMDB write into the read-only map), and nothing VarveDB never writes (duplicate-sorted
//!   data, `LEAF2` pages, sub-pages).
//!
//! The cost is one read of every reachable page: in proportion to the file. The layout below is
//! LMDB 0.9's on a 64-bit little-endian machine (`mdb.c`: `MDB_page`, `MDB_node`, `MDB_db`,
//! `MDB_meta`), what `lmdb-master-sys` builds.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The page header: `mp_pgno` (u64), `mp_pad` (u16), `mp_flags` (u16), then `mp_lower` and
/// `mp_upper` (u16 each), or `mp_pages` (u32) on an overflow page.
const PAGE_HEADER: usize = 16;
/// A node's header: `mn_lo`, `mn_hi`, `mn_flags`, `mn_ksize` (u16 each).
const NODE_HEADER: usize = 8;
/// `MDB_db`: `md_pad` u32, `md_flags` u16, `md_depth` u16, then five u64 (branch, leaf and
/// overflow page counts, entries) and `md_root` u64.
const DB_RECORD: usize = 48;
/// In a meta page, after the page header: `mm_magic` u32, `mm_version` u32, `mm_address` u64,
/// `mm_mapsize` u64, `mm_dbs[2]`, `mm_last_pg` u64, `mm_txnid` u64.
const META_DBS: usize = PAGE_HEADER + 24;
const META_LAST_PAGE: usize = META_DBS + 2 * DB_RECORD;
const MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;

const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;

const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const F_DUPDATA: u16 = 0x04;

/// `MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERDUP | MDB_REVERSEDUP`: database flags for
/// duplicate-sorted data, which VarveDB never creates.
const DUP_FLAGS: u16 = 0x04 | 0x10 | 0x20 | 0x40;
/// LMDB's largest key (`MDB_MAXKEYSIZE`).
const KEY_MAX: usize = 511;
/// No LMDB tree is deeper than this for any file that fits in 2^64 bytes.
const DEPTH_MAX: u16 = 64;
/// The page sizes LMDB uses (`MDB_MIN_PAGESIZE`.. the largest OS page).
const PAGE_SIZES: std::ops::RangeInclusive<usize> = 256..=65_536;

/// What the check saw: for the figures of a check's cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageCheck {
    /// The data file's page size.
    pub page_size: usize,
    /// Pages in the file.
    pub file_pages: u64,
    /// Pages whose header was read and checked: every branch and leaf page and the first
    /// page of every overflow run reachable from either meta page, each counted once.
    pub pages_read: u64,
}

/// A damage found: the page and what is wrong with it.
struct Damage {
    page: u64,
    reason: String,
}

type Walk<T> = std::result::Result<T, Damage>;

fn damage<T>(page: u64, reason: impl Into<String>) -> Walk<T> {
    Err(Damage {
        page,
        reason: reason.into(),
    })
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// A tree's record (`MDB_db`) as the checker needs it.
#[derive(Clone, Copy)]
struct Tree {
    flags: u16,
    depth: u16,
    root: u64,
}

impl Tree {
    fn parse(bytes: &[u8]) -> Tree {
        Tree {
            flags: u16_at(bytes, 4),
            depth: u16_at(bytes, 6),
            root: u64_at(bytes, 40),
        }
    }
}

/// The data file, read a page at a time.
struct DataFile {
    file: File,
    page_size: usize,
    pages: u64,
    buffer: Vec<u8>,
}

impl DataFile {
    /// The `len` bytes of data of the overflow run at `first` (already checked to lie inside
    /// the file).
    fn read_run(&mut self, first: u64, len: usize) -> Walk<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        let at = first * self.page_size as u64 + PAGE_HEADER as u64;
        self.file
            .read_exact_at(&mut bytes, at)
            .or_else(|e| damage(first, format!("it cannot be read: {e}")))?;
        Ok(bytes)
    }

    /// Reads page `pgno` into the buffer; damage if it is not wholly inside the file.
    fn read(&mut self, pgno: u64, from: u64) -> Walk<&[u8]> {
        if pgno >= self.pages {
            return damage(
                from,
                format!(
                    "it points at page {pgno}, past the end of the file ({} pages)",
                    self.pages
                ),
            );
        }
        let at = pgno * self.page_size as u64;
        self.file
            .read_exact_at(&mut self.buffer, at)
            .or_else(|e| damage(pgno, format!("it cannot be read: {e}")))?;
        Ok(&self.buffer)
    }
}

/// Checks the data file `data_file` as LMDB would trust it (see the module docs). A damaged
/// page is `Error::DamagedPage`; a file that is not an LMDB environment at all is
/// `Error::InvalidStore` (LMDB would refuse it too).
pub(crate) fn check_file(store: &Path, data_file: &Path) -> Result<PageCheck> {
    let io = |source| Error::Io {
        path: data_file.into(),
        source,
    };
    let file = File::open(data_file).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let invalid = |reason: String| Error::InvalidStore {
        path: store.into(),
        reason,
    };
    let damaged = |d: Damage| Error::DamagedPage {
        path: store.into(),
        page: d.page,
        reason: d.reason,
    };
    // Page 0's meta gives the page size; it is read with the largest size LMDB allows.
    let mut head = vec![0u8; META_LAST_PAGE + 16];
    file.read_exact_at(&mut head, 0)
        .map_err(|_| invalid("the data file is shorter than a meta page".into()))?;
    if u32_at(&head, PAGE_HEADER) != MAGIC {
        return Err(invalid(
            "the data file is not an LMDB environment (no magic number)".into(),
        ));
    }
    let page_size = u32_at(&head, META_DBS) as usize;
    if !page_size.is_power_of_two() || !PAGE_SIZES.contains(&page_size) {
        return Err(damaged(Damage {
            page: 0,
            reason: format!("the meta page gives a page size of {page_size} bytes"),
        }));
    }
    let mut data = DataFile {
        file,
        page_size,
        pages: len / page_size as u64,
        buffer: vec![0u8; page_size],
    };
    let mut check = PageCheck {
        page_size,
        file_pages: data.pages,
        pages_read: 0,
    };
    if data.pages < 2 {
        return Err(invalid(format!(
            "the data file is {len} bytes: shorter than its two meta pages"
        )));
    }
    let mut seen_any = HashSet::new();
    for meta in 0..2u64 {
        let page = data.read(meta, meta).map_err(damaged)?.to_vec();
        let (trees, last_page) = check_meta(&page, meta, page_size).map_err(damaged)?;
        let txnid = u64_at(&page, META_LAST_PAGE + 8);
        let mut reach = Reach {
            last: last_page,
            txnid,
            seen: HashSet::new(),
            runs: Vec::new(),
            free: Vec::new(),
        };
        for (tree, kind) in trees.into_iter().zip([Kind::Free, Kind::Main]) {
            walk_tree(&mut data, tree, meta, kind, &mut reach).map_err(damaged)?;
        }
        reach.check_free_pages().map_err(damaged)?;
        seen_any.extend(reach.seen);
    }
    check.pages_read = seen_any.len() as u64;
    Ok(check)
}

/// Checks a meta page; its free list and main tree, and its last page.
fn check_meta(page: &[u8], meta: u64, page_size: usize) -> Walk<([Tree; 2], u64)> {
    let flags = u16_at(page, 10);
    if u64_at(page, 0) != meta || flags != P_META {
        return damage(meta, "it is not a meta page (wrong number or flags)");
    }
    if u32_at(page, PAGE_HEADER) != MAGIC {
        return damage(meta, "the meta page has no magic number");
    }
    let version = u32_at(page, PAGE_HEADER + 4);
    if version != DATA_VERSION {
        return damage(meta, format!("the meta page's version is {version}"));
    }
    let size = u32_at(page, META_DBS) as usize;
    if size != page_size {
        return damage(
            meta,
            format!("the meta page gives a page size of {size} bytes, the other {page_size}"),
        );
    }
    let free = Tree::parse(&page[META_DBS..]);
    let main = Tree::parse(&page[META_DBS + DB_RECORD..]);
    Ok(([free, main], u64_at(page, META_LAST_PAGE)))
}

/// An invalid page number: an empty tree's root.
const P_INVALID: u64 = u64::MAX;

/// What one meta page reaches: the pages of its trees, its overflow runs, and the pages its
/// free list names (with the page that names each).
struct Reach {
    /// The meta page's last page (`mm_last_pg`): LMDB allocates new pages after it, so a page
    /// in use past it would be handed out again and overwritten.
    last: u64,
    /// The meta page's transaction id: a free-list entry is keyed by the transaction that
    /// freed its pages, so by one from 1 to this.
    txnid: u64,
    seen: HashSet<u64>,
    runs: Vec<(u64, u64)>,
    free: Vec<(u64, u64)>,
}

impl Reach {
    /// A page the free list names must be free in this snapshot: LMDB hands it out for the
    /// next write, which would then overwrite a page still in use.
    fn check_free_pages(&mut self) -> Walk<()> {
        self.runs.sort_unstable();
        let mut listed = HashSet::with_capacity(self.free.len());
        for &(id, listed_by) in &self.free {
            if !listed.insert(id) {
                return damage(
                    listed_by,
                    format!("its free list names page {id} a second time"),
                );
            }
            let in_run = match self.runs.partition_point(|&(first, _)| first <= id) {
                0 => false,
                i => {
                    let (first, pages) = self.runs[i - 1];
                    id < first + pages
                }
            };
            if in_run || self.seen.contains(&id) {
                return damage(
                    listed_by,
                    format!("its free list names page {id}, which the tree still uses"),
                );
            }
        }
        Ok(())
    }
}

/// Which tree is walked: what its leaves' values are to LMDB.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The free list: LMDB reads each value as a list of page numbers.
    Free,
    /// The main tree: its values may be named databases' records, which LMDB follows.
    Main,
    /// A named database: LMDB does not read its values.
    Named,
}

/// Walks one tree: `tree`'s root down to its leaves, `from` naming the page that holds its
/// record.
fn walk_tree(
    data: &mut DataFile,
    tree: Tree,
    from: u64,
    kind: Kind,
    reach: &mut Reach,
) -> Walk<()> {
    if tree.root == P_INVALID {
        return if tree.depth == 0 {
            Ok(())
        } else {
            damage(from, "an empty tree with a depth")
        };
    }
    if tree.flags & DUP_FLAGS != 0 {
        return damage(
            from,
            format!(
                "a tree with duplicate-sorted data (flags {:#x}), which VarveDB never writes",
                tree.flags
            ),
        );
    }
    if tree.depth == 0 || tree.depth > DEPTH_MAX {
        return damage(from, format!("a tree of depth {}", tree.depth));
    }
    // (page, its parent, its depth from the root, 1-based)
    let mut stack = vec![(tree.root, from, 1u16)];
    while let Some((pgno, parent, depth)) = stack.pop() {
        if !reach.seen.insert(pgno) {
            return damage(
                parent,
                format!("it points at page {pgno}, which another page already points at"),
            );
        }
        if pgno > reach.last {
            return damage(
                parent,
                format!(
                    "it points at page {pgno}, past the last page its meta page uses ({})",
                    reach.last
                ),
            );
        }
        let page = data.read(pgno, parent)?.to_vec();
        check_page_header(&page, pgno, data.page_size)?;
        let flags = u16_at(&page, 10);
        let leaf_level = depth == tree.depth;
        match (flags & (P_BRANCH | P_LEAF), leaf_level) {
            (P_BRANCH, false) | (P_LEAF, true) => {}
            _ => {
                return damage(
                    pgno,
                    format!(
                        "page flags {flags:#x} at depth {depth} of a tree of depth {}",
                        tree.depth
                    ),
                );
            }
        }
        for node_at in node_offsets(&page, pgno, data.page_size)? {
            let node_flags = u16_at(&page, node_at + 4);
            let key_len = usize::from(u16_at(&page, node_at + 6));
            if key_len > KEY_MAX {
                return damage(pgno, format!("a key of {key_len} bytes"));
            }
            let key_end = node_at + NODE_HEADER + key_len;
            if key_end > data.page_size {
                return damage(pgno, format!("a node at {node_at} runs past the page"));
            }
            let lo = u64::from(u16_at(&page, node_at));
            let hi = u64::from(u16_at(&page, node_at + 2));
            if !leaf_level {
                let child = lo | hi << 16 | u64::from(node_flags) << 32;
                stack.push((child, pgno, depth + 1));
                continue;
            }
            let data_len = (lo | hi << 16) as usize;
            if node_flags & F_DUPDATA != 0 || node_flags & !(F_BIGDATA | F_SUBDATA) != 0 {
                return damage(
                    pgno,
                    format!("a node with flags {node_flags:#x}, which VarveDB never writes"),
                );
            }
            if kind == Kind::Free {
                let freed_by = u64_at(&page, node_at + NODE_HEADER);
                if key_len != 8 || freed_by == 0 || freed_by > reach.txnid {
                    return damage(
                        pgno,
                        format!(
                            "a free-list key of {key_len} bytes (transaction {freed_by}, the meta \
                             page's is {})",
                            reach.txnid
                        ),
                    );
                }
            }
            if node_flags & F_BIGDATA != 0 {
                if key_end + 8 > data.page_size {
                    return damage(pgno, format!("a node at {node_at} runs past the page"));
                }
                let first = u64_at(&page, key_end);
                let pages = check_overflow(data, first, data_len, pgno, &mut reach.seen)?;
                if first.saturating_add(pages) > reach.last + 1 {
                    return damage(
                        first,
                        format!(
                            "an overflow run past the last page its meta page uses ({})",
                            reach.last
                        ),
                    );
                }
                reach.runs.push((first, pages));
                if kind == Kind::Free {
                    let list = data.read_run(first, data_len)?;
                    for id in check_free_list(&list, first, data.pages)? {
                        reach.free.push((id, first));
                    }
                }
                continue;
            }
            if key_end + data_len > data.page_size {
                return damage(pgno, format!("a node at {node_at} runs past the page"));
            }
            if kind == Kind::Free {
                for id in check_free_list(&page[key_end..key_end + data_len], pgno, data.pages)? {
                    reach.free.push((id, pgno));
                }
            }
            if node_flags & F_SUBDATA != 0 {
                if kind != Kind::Main || data_len != DB_RECORD {
                    return damage(pgno, "a named database's record where none can be");
                }
                let sub = Tree::parse(&page[key_end..key_end + DB_RECORD]);
                // Depth first: the named tree's pages join `seen` before the rest.
                walk_tree(data, sub, pgno, Kind::Named, reach)?;
            }
        }
    }
    Ok(())
}

/// A free-list value, as LMDB reads it (`MDB_IDL`): a count `n`, then `n` page numbers,
/// strictly descending, each a page of the file past the two meta pages. LMDB merges such a
/// list by its count (`mdb_midl_xmerge`): a count past the value reads outside it, and a page
/// number past the file would be handed out for writing.
fn check_free_list(list: &[u8], page: u64, file_pages: u64) -> Walk<Vec<u64>> {
    if list.len() < 8 || !list.len().is_multiple_of(8) {
        return damage(page, format!("a free-list value of {} bytes", list.len()));
    }
    let count = u64_at(list, 0);
    let room = (list.len() / 8 - 1) as u64;
    if count > room {
        return damage(
            page,
            format!("a free list of {count} pages in a value with room for {room}"),
        );
    }
    let mut above = u64::MAX;
    let mut ids = Vec::with_capacity(count as usize);
    for i in 1..=count as usize {
        let id = u64_at(list, i * 8);
        if id < 2 || id >= file_pages || id >= above {
            return damage(
                page,
                format!("a free list that names page {id} (the file has {file_pages} pages)"),
            );
        }
        above = id;
        ids.push(id);
    }
    Ok(ids)
}

/// The page header's bounds, for a branch or leaf page.
fn check_page_header(page: &[u8], pgno: u64, page_size: usize) -> Walk<()> {
    let own = u64_at(page, 0);
    if own != pgno {
        return damage(pgno, format!("its header gives page number {own}"));
    }
    // Exactly a branch or a leaf: LMDB clears its in-memory flags (P_DIRTY, P_LOOSE, P_KEEP)
    // before it writes a page, and a page that says P_DIRTY on disk would be written to in
    // place, in the read-only map (found by open_store: SIGSEGV in `_mdb_cursor_put`).
    let flags = u16_at(page, 10);
    if flags != P_BRANCH && flags != P_LEAF {
        return damage(
            pgno,
            format!("page flags {flags:#x} where a tree page was expected"),
        );
    }
    let (lower, upper) = (usize::from(u16_at(page, 12)), usize::from(u16_at(page, 14)));
    if lower < PAGE_HEADER || lower > upper || upper > page_size || lower % 2 != 0 {
        return damage(
            pgno,
            format!("free space from {lower} to {upper} in a page of {page_size} bytes"),
        );
    }
    Ok(())
}

/// The offsets of a page's nodes, each checked to lie in the page's node area.
fn node_offsets(page: &[u8], pgno: u64, page_size: usize) -> Walk<Vec<usize>> {
    let lower = usize::from(u16_at(page, 12));
    let upper = usize::from(u16_at(page, 14));
    let count = (lower - PAGE_HEADER) / 2;
    if count == 0 {
        return damage(pgno, "a tree page with no node");
    }
    (0..count)
        .map(|i| {
            let at = usize::from(u16_at(page, PAGE_HEADER + 2 * i));
            if at < upper || at + NODE_HEADER > page_size || at % 2 != 0 {
                damage(pgno, format!("node {i} at offset {at}, outside its area"))
            } else {
                Ok(at)
            }
        })
        .collect()
}

/// An overflow run: `data_len` bytes from page `first`, which a node of page `from` names.
fn check_overflow(
    data: &mut DataFile,
    first: u64,
    data_len: usize,
    from: u64,
    seen: &mut HashSet<u64>,
) -> Walk<u64> {
    let page_size = data.page_size;
    let head = data.read(first, from)?;
    let own = u64_at(head, 0);
    let flags = u16_at(head, 10);
    let pages = u64::from(u32_at(head, 12));
    if own != first || flags != P_OVERFLOW {
        return damage(first, "it is not the overflow page its node names");
    }
    let needed = (PAGE_HEADER + data_len).div_ceil(page_size) as u64;
    if pages < needed || pages == 0 {
        return damage(
            first,
            format!("an overflow run of {pages} pages for {data_len} bytes"),
        );
    }
    let end = first.saturating_add(pages);
    if end > data.pages {
        return damage(
            first,
            format!(
                "an overflow run to page {end}, past the end of the file ({} pages)",
                data.pages
            ),
        );
    }
    if !seen.insert(first) {
        return damage(
            from,
            format!("it points at overflow page {first}, which another node already names"),
        );
    }
    Ok(pages)
}
