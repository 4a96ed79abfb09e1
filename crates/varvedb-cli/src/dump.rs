//! `varvedb export` and `varvedb import`: a store as JSON lines, and a store rebuilt from them.
//!
//! The first line is the header (event types with their ids, wrapped stream keys, the key
//! check, consumers); then one line per event, in global order, with its whole envelope and
//! its stored payload in base64. Nothing is decrypted: an encrypted event's payload is its
//! ciphertext, so an export needs no key and shows no plaintext of an encrypted stream.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use varvedb::{Storage, StorageConfig};
use varvedb_cli::lines::{event_line, header_line, parse_event, parse_header};

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The file to write; `-` or nothing: standard output.
    pub(crate) file: Option<PathBuf>,
    /// Pass over damaged events instead of stopping at the first, and say how many were
    /// skipped (exit 1). The export then has gaps where they were, which `import` refuses: it
    /// salvages what can be read.
    #[arg(long)]
    pub(crate) skip_damaged: bool,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The export to read; `-`: standard input.
    pub(crate) file: PathBuf,
    /// Set every consumer of the export to its exported position, even one the store has at
    /// a later position (it then handles events again) or has deleted. Without it, a consumer
    /// only moves forward, and one the store lacks is created only when the import brings
    /// events.
    #[arg(long)]
    pub(crate) overwrite_consumers: bool,
}

/// A progress bar on stderr, drawn only when stderr is a terminal (indicatif's default): quiet
/// in pipes and files. Used by every long command of the tool.
pub(crate) fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Writes the store as JSON lines to `args.file` (or standard output).
pub(crate) fn export(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    args: &ExportArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let file = args.file.as_deref().filter(|f| *f != Path::new("-"));
    let sink: Box<dyn Write> = match file {
        // Never over a file, never through a link (O_EXCL), and 0600 from the first byte: an
        // export holds everything the store's files do.
        Some(path) => Box::new(private_file(path).map_err(|e| {
            format!(
                "{}: {e} (an export never overwrites a file)",
                path.display()
            )
        })?),
        None => Box::new(std::io::stdout().lock()),
    };
    // A bar on stderr, unless the export itself is going to this terminal.
    let show_progress = file.is_some() || !std::io::IsTerminal::is_terminal(&std::io::stdout());
    let written = write_export(&storage, sink, show_progress, args.skip_damaged);
    match (written, file) {
        (Ok((events, consumers, skipped)), path) => {
            if let Some(path) = path {
                // The file is complete only once it is on disk.
                File::open(path)?.sync_all()?;
                eprintln!(
                    "varvedb: exported {events} events and {consumers} consumers to {}",
                    path.display()
                );
            }
            skipped.into_result()
        }
        (Err(e), path) => {
            // An incomplete export is removed rather than left to be mistaken for one.
            if let Some(path) = path {
                drop(std::fs::remove_file(path));
            }
            Err(e)
        }
    }
}

/// Writes the header and every event of one snapshot to `sink`; returns the events and
/// consumers written. The progress bar is cleared whatever happens.
fn write_export(
    storage: &Storage,
    sink: Box<dyn Write>,
    show_progress: bool,
    skip_damaged: bool,
) -> Result<(u64, usize, crate::Skipped), Box<dyn std::error::Error>> {
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let txn = storage.read_txn()?;
    let header = storage.export_header(&txn)?;
    serde_json::to_writer(&mut out, &header_line(&header))?;
    out.write_all(b"\n")?;
    let progress = bar(
        if show_progress { header.last_seq } else { 0 },
        "export [{bar:30}] {pos}/{len} events ({percent}%) {elapsed}",
    );
    if !show_progress {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut skipped = crate::Skipped::default();
    let written = (|| -> Result<u64, Box<dyn std::error::Error>> {
        let mut n = 0u64;
        let mut next = 1;
        // Each pass reads from `next` in a snapshot of its own: after LMDB finds its pages
        // damaged it refuses the rest of that snapshot, so a skip starts a new one.
        let mut snapshot = Some(txn);
        while next <= header.last_seq {
            let txn = match snapshot.take() {
                Some(txn) => txn,
                None => storage.read_txn()?,
            };
            let mut damaged = None;
            for event in storage.export_events(&txn, next) {
                match event {
                    Ok(event) => {
                        if event.seq > header.last_seq {
                            break;
                        }
                        next = event.seq + 1;
                        serde_json::to_writer(&mut out, &event_line(&event))?;
                        out.write_all(b"\n")?;
                        n += 1;
                        if n.is_multiple_of(4096) {
                            progress.set_position(n);
                        }
                    }
                    Err(e) if skip_damaged && e.kind() == varvedb::ErrorKind::Corruption => {
                        damaged = Some(e);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(e) = damaged else { break };
            next = skipped.pass(next, &e);
        }
        out.flush()?;
        Ok(n)
    })();
    progress.finish_and_clear();
    Ok((written?, header.consumers.len(), skipped))
}

/// Reads an export and writes it into the store at `path` (created if missing).
pub(crate) fn import(
    path: &Path,
    master_key: Option<[u8; 32]>,
    args: &ImportArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let (source, len): (Box<dyn Read>, u64) = if args.file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = File::open(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), len)
    };
    let progress = bar(
        len,
        "import [{bar:30}] {bytes}/{total_bytes} ({percent}%) {elapsed}",
    );
    // An import into a new path is all or nothing: it builds the store beside it and renames
    // it in at the end. A failed one removes what it built; a killed one leaves it, and the
    // same import run again continues it.
    let staging = new_store_path(path)?.map(|name| path.with_file_name(name));
    let target = staging.as_deref().unwrap_or(path);
    if staging.as_deref().is_some_and(Path::exists) {
        eprintln!(
            "varvedb: continuing the interrupted import in {}",
            target.display()
        );
    }
    // The bar is cleared whatever happens, so that an error prints on a clean line.
    let imported = import_lines(
        target,
        master_key,
        progress.wrap_read(source),
        args.overwrite_consumers,
    );
    progress.finish_and_clear();
    let report = match (imported, &staging) {
        (Ok((storage, report)), _) => {
            drop(storage);
            report
        }
        (Err(e), Some(staging)) => {
            drop(std::fs::remove_dir_all(staging));
            return Err(format!("{e} (nothing was created at {})", path.display()).into());
        }
        (Err(e), None) => return Err(e),
    };
    if let Some(staging) = &staging {
        std::fs::rename(staging, path).map_err(|e| {
            format!(
                "the import is complete in {}, but it could not be moved to {}: {e}",
                staging.display(),
                path.display()
            )
        })?;
        // The rename is durable once the parent directory is on disk.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
    }
    println!(
        "imported {} events ({} already there) and {} consumers into {}",
        report.imported,
        report.already_present,
        report.consumers,
        path.display()
    );
    if report.consumers_kept > 0 {
        println!(
            "{} consumers of the export left as the store has them (later there, or deleted \
             since): a consumer only moves forward; --overwrite-consumers sets them all",
            report.consumers_kept
        );
    }
    Ok(())
}

/// For an import into a path that holds no store yet (it does not exist, or is an empty
/// directory): the name of the directory beside it where the store is built. `None` for an
/// existing store, which the import continues or refuses.
fn new_store_path(path: &Path) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let fresh = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(format!(
                "{}: --path is a file, not a store's directory; give a new directory",
                path.display()
            )
            .into());
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    let Some(name) = path.file_name().filter(|_| fresh) else {
        return Ok(None);
    };
    Ok(Some(format!(".{}.importing", name.to_string_lossy())))
}

/// Reads the export's lines from `source` and imports them into the store at `path`.
fn import_lines(
    path: &Path,
    master_key: Option<[u8; 32]>,
    source: impl Read,
    overwrite_consumers: bool,
) -> Result<(Storage, varvedb::ImportReport), Box<dyn std::error::Error>> {
    let config = StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        master_key,
        ..Default::default()
    };
    // The longest line an export of an event the store accepts can have: its payload in
    // base64 (4 bytes per 3), and room for the envelope. A longer line is refused before it
    // is held in memory whole.
    let line_max = config.event_bytes_max.div_ceil(3) * 4 + (1 << 20);
    let mut source = BufReader::with_capacity(1 << 20, source);
    let mut number = 0usize;
    let mut next_line = move || -> Result<Option<(usize, String)>, String> {
        number += 1;
        let mut line = Vec::new();
        let read = (&mut source)
            .take(line_max as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("line {number}: {e}"))?;
        if read == 0 {
            return Ok(None);
        }
        if line.len() > line_max {
            return Err(format!(
                "line {number} is longer than {line_max} bytes, the longest an event of at most \
                 {} bytes exports to",
                config_event_max()
            ));
        }
        String::from_utf8(line)
            .map(|l| Some((number, l)))
            .map_err(|_| format!("line {number}: not UTF-8"))
    };
    let (_, first) = next_line()?.ok_or("the export is empty: no header line")?;
    let header = parse_header(&first)?;
    let storage = Storage::open(config)?;
    let mut importer = storage.importer();
    importer.overwrite_consumers(overwrite_consumers);
    importer.begin(&header)?;
    // The lines of the events not yet known to be written: an event refused when its batch
    // is written is named by its line as well as its sequence.
    let mut lines: std::collections::VecDeque<(u64, usize)> = std::collections::VecDeque::new();
    let at_line = |lines: &std::collections::VecDeque<(u64, usize)>, e: varvedb::Error| {
        let line = match &e {
            varvedb::Error::InvalidImport { seq, .. } => {
                lines.iter().find(|(s, _)| s == seq).map(|(_, l)| *l)
            }
            _ => None,
        };
        match line {
            Some(line) => format!("line {line}: {e}"),
            None => e.to_string(),
        }
    };
    while let Some((number, line)) = next_line()? {
        if line.trim().is_empty() {
            continue;
        }
        let event = parse_event(number, &line)?;
        if lines.len() >= IMPORT_LINES_KEPT {
            lines.pop_front();
        }
        lines.push_back((event.seq, number));
        importer.push(event).map_err(|e| at_line(&lines, e))?;
    }
    let report = importer.finish(&header).map_err(|e| at_line(&lines, e))?;
    Ok((storage, report))
}

/// How many events' lines an import remembers for its error messages: more than an importer
/// holds before it writes a batch.
const IMPORT_LINES_KEPT: usize = 1 << 14;

/// The default `event_bytes_max`, which the import's store is opened with.
fn config_event_max() -> usize {
    StorageConfig::default().event_bytes_max
}

/// Creates `path` exclusively (`O_CREAT | O_EXCL`: no existing file, no symbolic link
/// followed), readable and writable by its owner only from the start.
pub(crate) fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}
