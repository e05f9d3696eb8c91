//! Pulling a VM image (Lume's OCI format, its legacy LZ4 format and the fallbacks Lume
//! accepts) into a directory: `disk.img` (sparse), `nvram.bin`, and a journal of the
//! parts written, so that a pull run again after an interruption fetches only the rest.
//!
//! Every blob is fetched once however many offsets list it, several at a time; its
//! bytes are checked against its digest, its decompressed bytes against the declared
//! size and uncompressed digest. Decompressed data goes straight to its place in the
//! (staging) disk; a part that fails a check is punched out again and never recorded
//! as written, and the caller moves the directory into place only when every part is.

use cabin_base::sync::Locked;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

use super::attachment::{self, Attachment};
use super::journal::Journal;
use super::layout::{self, AttachmentPlan, Codec, Format, Part, Plan};
use super::manifest::{self, Manifest, VmDescription, MAX_CONFIG_BYTES};
use super::push::reference;
use super::sparse::{self, SparseWriter};
use super::{io_error, lz4::Lz4Decoder, media, retryable, LumeError};
use crate::registry::{auth_of, client_for, RegistryOptions};
use crate::store::hex;

pub const DISK: &str = "disk.img";
pub const NVRAM: &str = "nvram.bin";
pub const JOURNAL: &str = "pull-journal";

#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest_digest: String,
    pub vm: VmDescription,
    pub format: Format,
    /// The image had an NVRAM layer (written to `nvram.bin`).
    pub has_nvram: bool,
    /// Bytes fetched by this pull: config, NVRAM and compressed disk parts.
    pub fetched_bytes: u64,
    /// Parts written by this pull, and parts an earlier pull had written.
    pub parts_written: usize,
    pub parts_resumed: usize,
    /// cabin's own files it fetched into `attachments/` (asked for, and in the image).
    pub attachments: Vec<Attachment>,
    /// Why the image's files of cabin's own were left out (malformed or failing their
    /// checks); the VM Lume's layers make was pulled all the same.
    pub attachments_refused: Option<String>,
}

/// The largest saved state a VM of `memory_size` bytes of RAM can have: its memory
/// (zero pages travel as flags) with a page header each, and its devices.
fn max_state_bytes(memory_size: u64) -> u64 {
    memory_size
        .saturating_add(memory_size / 256)
        .saturating_add(64 << 20)
}

fn registry_err(image: &str, e: &oci_client::errors::OciDistributionError) -> LumeError {
    super::registry_err(image, e, super::Direction::Pull)
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
}

/// Fetches and parses the manifest of `repository:tag`; returns it with its digest.
pub async fn fetch_manifest(
    client: &Client,
    r: &Reference,
    image: &str,
    opts: &RegistryOptions,
) -> Result<(Manifest, String), LumeError> {
    let mut attempt = 0;
    let (bytes, _) = loop {
        match client
            .pull_manifest_raw(
                r,
                &auth_of(opts),
                &[
                    media::MANIFEST,
                    "application/vnd.docker.distribution.manifest.v2+json",
                ],
            )
            .await
        {
            Ok(v) => break v,
            Err(e) if attempt < opts.retries && retryable(&e) => {
                backoff(attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(registry_err(image, &e)),
        }
    };
    let digest = format!("sha256:{}", crate::store::sha256_hex(&bytes));
    if let Some(want) = r.digest() {
        if want != digest {
            return Err(LumeError::invalid(
                image,
                format!("the manifest's digest is {digest}, not {want}"),
            ));
        }
    }
    Ok((Manifest::parse(image, &bytes)?, digest))
}

/// A client authorised to pull `repository:tag`.
pub async fn client(
    repository: &str,
    tag: &str,
    opts: &RegistryOptions,
) -> Result<(Client, Reference), LumeError> {
    let r = reference(repository, tag)?;
    let client = client_for(&r, opts.insecure);
    // Lume goes on anonymously when no token is to be had for a pull.
    if client
        .auth(&r, &auth_of(opts), RegistryOperation::Pull)
        .await
        .is_err()
    {
        let _ = client
            .auth(
                &r,
                &oci_client::secrets::RegistryAuth::Anonymous,
                RegistryOperation::Pull,
            )
            .await;
    }
    Ok((client, r))
}

/// What fetching a blob of the image needs: the registry's client, the image's reference
/// and name (for messages), the retry settings.
#[derive(Clone, Copy)]
struct Fetch<'a> {
    client: &'a Client,
    r: &'a Reference,
    image: &'a str,
    opts: &'a RegistryOptions,
}

/// Fetches a small blob whole, bounded and checked against its digest.
async fn small_blob(f: Fetch<'_>, digest: &str, limit: u64) -> Result<Vec<u8>, LumeError> {
    let Fetch {
        client,
        r,
        image,
        opts,
    } = f;
    let mut attempt = 0;
    loop {
        let got: Result<Vec<u8>, String> = async {
            let s = client.pull_blob_stream(r, digest).await.map_err(|e| {
                if retryable(&e) {
                    format!("retry:{e}")
                } else {
                    registry_err(image, &e).to_string()
                }
            })?;
            let mut body = s.stream;
            let mut out = Vec::new();
            while let Some(b) = body.next().await {
                let b = match b {
                    Ok(b) => b,
                    // All of it came, and the check below says what is wrong.
                    Err(e) if is_digest_mismatch(&e) => break,
                    Err(e) => return Err(format!("retry:{e}")),
                };
                out.extend_from_slice(&b);
                if out.len() as u64 > limit {
                    return Err(format!("blob {digest} is larger than {limit} bytes"));
                }
            }
            Ok(out)
        }
        .await;
        match got {
            Ok(b) => {
                let actual = format!("sha256:{}", crate::store::sha256_hex(&b));
                if actual != digest {
                    return Err(LumeError::invalid(
                        image,
                        format!("blob {digest} does not match its digest (got {actual})"),
                    ));
                }
                return Ok(b);
            }
            Err(e) if e.starts_with("retry:") && attempt < opts.retries => {
                backoff(attempt).await;
                attempt += 1;
            }
            Err(e) => return Err(LumeError::registry(image, e.trim_start_matches("retry:"))),
        }
    }
}

/// A small blob fetched whole into `path` (staged, renamed into place, its owner's
/// only: an NVRAM holds the guest's firmware variables, a state description its
/// identity); returns its size.
async fn small_file(f: Fetch<'_>, digest: &str, limit: u64, path: &Path) -> Result<u64, LumeError> {
    let b = small_blob(f, digest, limit).await?;
    cabin_base::files::write_atomic(path, &b, 0o600)
        .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
    Ok(b.len() as u64)
}

/// oci_client's own check at the end of a blob's stream: all its bytes came, and they
/// do not hash to its digest.
fn is_digest_mismatch(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<oci_client::errors::DigestError>())
        .is_some_and(|d| matches!(d, oci_client::errors::DigestError::VerificationError { .. }))
}

/// Reads what the async side sends over a channel; a broken transfer is an error of
/// kind `ConnectionAborted`.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    cur: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Hashes what passes to the sparse writer.
struct Hashed<'a> {
    w: SparseWriter<'a>,
    h: Sha256,
}

impl Write for Hashed<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.w.write(b)?;
        self.h.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Ctx<'a> {
    fetch: Fetch<'a>,
    /// The file the parts go to ("disk.img", or an attachment), as named in messages
    /// and progress.
    what: &'a str,
    disk: Arc<File>,
    disk_size: u64,
    fetched: Mutex<u64>,
}

enum Failure {
    Retry(String),
    Fatal(LumeError),
}

impl Ctx<'_> {
    /// "disk" for the disk's parts (as messages always named them), else the file.
    fn part_name(&self) -> &str {
        match self.what {
            DISK => "disk",
            other => other,
        }
    }

    /// Fetches `part`'s blob and writes it at `offset`; returns the bytes written and
    /// whether any was not zero.
    async fn write_part(
        &self,
        part: &Part,
        number: usize,
        offset: u64,
    ) -> Result<(u64, bool), LumeError> {
        let mut attempt = 0;
        loop {
            match self.write_part_once(part, number, offset).await {
                Ok(n) => return Ok(n),
                Err(Failure::Retry(e)) if attempt < self.fetch.opts.retries => {
                    let _ = e;
                    backoff(attempt).await;
                    attempt += 1;
                }
                Err(Failure::Retry(e)) => {
                    return Err(LumeError::registry(
                        self.fetch.image,
                        format!(
                            "fetching {} part {number} ({}) failed: {e}; pull again to resume",
                            self.part_name(),
                            part.digest
                        ),
                    ))
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }

    async fn write_part_once(
        &self,
        part: &Part,
        number: usize,
        offset: u64,
    ) -> Result<(u64, bool), Failure> {
        let image = self.fetch.image;
        let stream = match self
            .fetch
            .client
            .pull_blob_stream(self.fetch.r, part.digest.as_str())
            .await
        {
            Ok(s) => s,
            Err(e) if retryable(&e) => return Err(Failure::Retry(e.to_string())),
            Err(e) => return Err(Failure::Fatal(registry_err(image, &e))),
        };
        let end = match part.size {
            Some(s) => offset + s,
            None => self.disk_size,
        };
        if end > self.disk_size {
            return Err(Failure::Fatal(LumeError::invalid(
                image,
                format!("{} part {number} ends past its end", self.part_name()),
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let disk = self.disk.clone();
        let codec = part.codec;
        let writer = tokio::task::spawn_blocking(move || -> io::Result<(u64, bool, String)> {
            let reader = ChannelReader {
                rx,
                cur: bytes::Bytes::new(),
            };
            let mut decoded: Box<dyn Read> = match codec {
                Codec::Gzip => Box::new(flate2::read::GzDecoder::new(
                    io::BufReader::with_capacity(1 << 20, reader),
                )),
                Codec::Lz4 => Box::new(Lz4Decoder::new(io::BufReader::with_capacity(
                    1 << 20,
                    reader,
                ))),
                Codec::Raw => Box::new(reader),
            };
            let mut out = Hashed {
                w: SparseWriter::new(&disk, offset, end)?,
                h: Sha256::new(),
            };
            io::copy(&mut decoded, &mut out)?;
            let digest = format!("sha256:{}", hex(&out.h.finalize()));
            let (n, data) = out.w.finish()?;
            Ok((n, data, digest))
        });
        let mut compressed = Sha256::new();
        let mut got = 0u64;
        let mut body = stream.stream;
        let mut broken = None;
        let mut decoder_stopped = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    got += b.len() as u64;
                    if got > part.compressed_size {
                        broken = Some(Failure::Fatal(LumeError::invalid(
                            image,
                            format!(
                                "blob {} is larger than the {} bytes its manifest says",
                                part.digest, part.compressed_size
                            ),
                        )));
                        break;
                    }
                    compressed.update(&b);
                    self.fetch.opts.progress.advance(self.what, b.len() as u64);
                    *self.fetched.locked() += b.len() as u64;
                    // When the decoder stops, its error says why, unless the blob
                    // does not match its digest either (corrupted on its way): the
                    // rest is read to tell.
                    if !decoder_stopped && tx.send(Ok(b)).await.is_err() {
                        decoder_stopped = true;
                    }
                }
                Err(e) if is_digest_mismatch(&e) => break, // checked below
                Err(e) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    broken = Some(Failure::Retry(format!(
                        "the download broke off after {got} of {} bytes ({e})",
                        part.compressed_size
                    )));
                    break;
                }
            }
        }
        drop(tx);
        drop(body);
        let result = writer
            .await
            .map_err(|e| Failure::Fatal(LumeError::Io(format!("writing {}: {e}", self.what))))?;
        let punch = |why: Failure| {
            let _ = sparse::punch_hole(&self.disk, offset, end - offset);
            Err(why)
        };
        if let Some(f) = broken {
            return punch(f);
        }
        let actual = format!("sha256:{}", hex(&compressed.finalize()));
        if got == part.compressed_size && actual != part.digest {
            return punch(Failure::Fatal(LumeError::invalid(
                image,
                format!(
                    "blob {} does not match its digest (got {actual}); nothing of it was kept",
                    part.digest
                ),
            )));
        }
        let (written, had_data, udigest) = match result {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                return punch(Failure::Retry(e.to_string()))
            }
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge && e.raw_os_error().is_none() => {
                return punch(Failure::Fatal(LumeError::invalid(
                    image,
                    format!("{} part {number} ({}) {e}", self.part_name(), part.digest),
                )))
            }
            Err(e) if e.raw_os_error().is_some() => {
                return punch(Failure::Fatal(io_error(
                    format!("writing {} part {number}", self.part_name()),
                    e,
                )))
            }
            Err(e) => {
                let what = match codec {
                    Codec::Gzip => "gzip",
                    Codec::Lz4 => "LZ4",
                    Codec::Raw => "raw",
                };
                return punch(Failure::Fatal(LumeError::invalid(
                    image,
                    format!(
                        "{} part {number} ({}) is not a valid {what} stream: {e}",
                        self.part_name(),
                        part.digest
                    ),
                )));
            }
        };
        if got < part.compressed_size {
            return punch(Failure::Retry(format!(
                "the registry sent {got} of {} bytes",
                part.compressed_size
            )));
        }
        if actual != part.digest {
            return punch(Failure::Fatal(LumeError::invalid(
                image,
                format!(
                    "blob {} does not match its digest (got {actual}); nothing of it was kept",
                    part.digest
                ),
            )));
        }
        if let Some(size) = part.size {
            if written != size {
                return punch(Failure::Fatal(LumeError::invalid(
                    image,
                    format!("{} part {number} decompresses to {written} bytes, not the {size} its manifest declares", self.part_name()),
                )));
            }
        }
        if let Some(want) = &part.uncompressed_digest {
            if *want != udigest {
                return punch(Failure::Fatal(LumeError::invalid(
                    image,
                    format!("{} part {number} decompresses to {udigest}, not the {want} its manifest declares; nothing of it was kept", self.part_name()),
                )));
            }
        }
        Ok((written, had_data))
    }
}

/// Pulls `repository:tag` into `dir` (created if missing), resuming what an earlier
/// pull of the same manifest left there.
pub async fn pull_into(
    dir: &Path,
    repository: &str,
    tag: &str,
    opts: &RegistryOptions,
) -> Result<Pulled, LumeError> {
    let image = format!("{repository}:{tag}");
    let (client, r) = client(repository, tag, opts).await?;
    let (m, manifest_digest) = fetch_manifest(&client, &r, &image, opts).await?;
    let from = Source {
        client: &client,
        r: &r,
        image: &image,
        manifest: &m,
        manifest_digest: &manifest_digest,
    };
    pull_manifest_into(dir, &from, opts, false).await
}

/// An image whose manifest has been fetched, and where from.
pub struct Source<'a> {
    pub client: &'a Client,
    pub r: &'a Reference,
    pub image: &'a str,
    pub manifest: &'a Manifest,
    pub manifest_digest: &'a str,
}

/// Pulls the image `from` into `dir` (created if missing), resuming what an earlier
/// pull of the same manifest left there; cabin's attachments too if `with_attachments`.
pub async fn pull_manifest_into(
    dir: &Path,
    from: &Source<'_>,
    opts: &RegistryOptions,
    with_attachments: bool,
) -> Result<Pulled, LumeError> {
    let Source {
        client,
        r,
        image,
        manifest: m,
        manifest_digest,
    } = *from;
    layout::check_digest(image, &m.config.digest)?;
    if m.config.size > MAX_CONFIG_BYTES {
        return Err(LumeError::invalid(
            image,
            "the config blob is larger than 1 MiB",
        ));
    }
    let fetch = Fetch {
        client,
        r,
        image,
        opts,
    };
    let config = small_blob(fetch, &m.config.digest, MAX_CONFIG_BYTES).await?;
    let plan: Plan = layout::plan(image, m, manifest::legacy_config_disk_size(&config))?;
    let vm = match plan.format {
        Format::Oci => manifest::describe_oci(image, m, &config, plan.disk_size)?,
        Format::Legacy => manifest::describe_legacy(image, &config, plan.disk_size)?,
    };
    std::fs::create_dir_all(dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
    let mut journal = Journal::open(&dir.join(JOURNAL), "pull", manifest_digest)
        .map_err(|e| io_error("opening the pull journal", e))?;
    let disk_path: PathBuf = dir.join(DISK);
    let disk = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&disk_path)
        .map_err(|e| io_error(format!("creating {}", disk_path.display()), e))?;
    if journal.entries() == 0 {
        disk.set_len(0)
            .map_err(|e| io_error("sizing disk.img", e))?;
    }
    disk.set_len(plan.disk_size)
        .map_err(|e| io_error("sizing disk.img", e))?;

    let mut has_nvram = false;
    let mut small_fetched = config.len() as u64;
    if let Some(n) = &plan.nvram {
        let limit = manifest::MAX_NVRAM_BYTES;
        let path = dir.join(NVRAM);
        small_fetched += small_file(fetch, &n.digest, limit, &path).await?;
        has_nvram = true;
    }

    let ctx = Ctx {
        fetch,
        what: DISK,
        disk: Arc::new(disk),
        disk_size: plan.disk_size,
        fetched: Mutex::new(small_fetched),
    };
    let progress = &opts.progress;
    let mut resumed = 0;
    let mut written_parts = 0usize;
    if plan.offsets_known {
        let (written, earlier) = write_at_offsets(&ctx, &plan.parts, &mut journal, "").await?;
        written_parts = written;
        resumed = earlier;
    } else {
        // Sizes unknown: one part after the other, each where the last ended. The
        // journal records where each part ended (`seq INDEX DIGEST END`), so a resumed
        // pull knows where the next one starts.
        let mut offset = 0u64;
        progress.start(DISK, plan.parts.iter().map(|p| p.compressed_size).sum(), 0);
        let ends: std::collections::HashMap<String, u64> = journal
            .lines()
            .iter()
            .filter_map(|l| {
                let (head, end) = l.rsplit_once(' ')?;
                Some((head.strip_prefix("seq ")?.to_string(), end.parse().ok()?))
            })
            .collect();
        let mut resuming = true;
        for (i, p) in plan.parts.iter().enumerate() {
            let key = format!("{i} {}", p.digest);
            if let (true, Some(&end)) = (resuming, ends.get(&key)) {
                offset = end;
                resumed += 1;
                progress.advance(DISK, p.compressed_size);
                continue;
            }
            resuming = false;
            let (n, _) = ctx.write_part(p, i, offset).await?;
            offset += n;
            written_parts += 1;
            ctx.disk
                .sync_data()
                .map_err(|e| io_error("flushing disk.img", e))?;
            journal
                .record(&format!("seq {key} {offset}"))
                .map_err(|e| io_error("recording progress in the pull journal", e))?;
        }
    }
    progress.finish(DISK);
    let mut fetched = *ctx.fetched.locked();
    let mut attachments = Vec::new();
    let mut refused = plan.attachments_refused.clone();
    if let Some(a) = plan
        .attachments
        .iter()
        .find(|a| a.kind == Attachment::State && a.size > max_state_bytes(vm.memory_size))
    {
        refused = Some(format!(
            "its saved state ({} bytes) is larger than a VM of {} MiB has",
            a.size,
            vm.memory_size >> 20
        ));
    }
    if with_attachments && refused.is_none() {
        for a in &plan.attachments {
            match pull_attachment(&ctx, a, dir, &mut journal).await {
                Ok((bytes, written, earlier)) => {
                    fetched += bytes;
                    written_parts += written;
                    resumed += earlier;
                    attachments.push(a.kind);
                }
                // Data that fails its checks: none of cabin's files is kept, and the
                // disk, fetched and checked, stays. The registry failing is still an
                // error (the pull can be resumed).
                Err(e @ LumeError::Invalid { .. }) => {
                    let _ = std::fs::remove_dir_all(dir.join(attachment::DIR));
                    attachments.clear();
                    refused = Some(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Pulled {
        manifest_digest: manifest_digest.to_string(),
        vm,
        format: plan.format,
        has_nvram,
        fetched_bytes: fetched,
        parts_written: written_parts,
        parts_resumed: resumed,
        attachments,
        attachments_refused: refused.filter(|_| with_attachments),
    })
}

/// Fetches the parts of `parts` not yet in `journal` (keys `<prefix><digest> <offset>`)
/// and writes each blob at its offsets, several at a time; returns the parts written
/// and those an earlier pull had written.
async fn write_at_offsets(
    ctx: &Ctx<'_>,
    parts: &[Part],
    journal: &mut Journal,
    prefix: &str,
) -> Result<(usize, usize), LumeError> {
    let groups = layout::groups(parts);
    let total: u64 = groups.iter().map(|(p, _)| p.compressed_size).sum();
    let mut resumed = 0;
    let mut todo = Vec::new();
    let mut already = 0;
    for (i, (p, offsets)) in groups.iter().enumerate() {
        let pending: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| !journal.contains(&format!("{prefix}{} {o}", p.digest)))
            .collect();
        resumed += offsets.len() - pending.len();
        if pending.is_empty() {
            already += p.compressed_size;
        } else {
            todo.push((i, *p, pending));
        }
    }
    ctx.fetch.opts.progress.start(ctx.what, total, already);
    let journal_lock = Mutex::new(journal);
    let done: Vec<usize> = futures::stream::iter(todo.iter().map(|(i, p, pending)| {
        let journal = &journal_lock;
        async move {
            let first = pending[0];
            let (_, had_data) = ctx.write_part(p, *i, first).await?;
            for &o in &pending[1..] {
                let disk = ctx.disk.clone();
                let len = p.size.unwrap_or(0);
                // An all-zero part (most often) is a hole at each of its offsets.
                tokio::task::spawn_blocking(move || match had_data {
                    true => sparse::copy_within(&disk, first, o, len),
                    false => sparse::zero_range(&disk, o, len),
                })
                .await
                .map_err(|e| LumeError::Io(e.to_string()))?
                .map_err(|e| io_error("copying a repeated part", e))?;
            }
            let disk = ctx.disk.clone();
            tokio::task::spawn_blocking(move || disk.sync_data())
                .await
                .map_err(|e| LumeError::Io(e.to_string()))?
                .map_err(|e| io_error(format!("flushing {}", ctx.what), e))?;
            let mut j = journal.locked();
            for &o in pending {
                j.record(&format!("{prefix}{} {o}", p.digest))
                    .map_err(|e| io_error("recording progress in the pull journal", e))?;
            }
            Ok::<usize, LumeError>(pending.len())
        }
    }))
    .buffer_unordered(ctx.fetch.opts.parallel.max(1))
    .try_collect()
    .await?;
    Ok((done.iter().sum(), resumed))
}

/// Fetches one of cabin's attachments into `<dir>/attachments/<file>`: a small one
/// whole (then renamed into place), a chunked one part by part like the disk, resumed
/// from `journal`. Returns the bytes fetched and the parts written and resumed.
async fn pull_attachment(
    disk_ctx: &Ctx<'_>,
    a: &AttachmentPlan,
    dir: &Path,
    journal: &mut Journal,
) -> Result<(u64, usize, usize), LumeError> {
    // A suspended guest's memory: its owner's only from the first byte.
    let to = dir.join(attachment::DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&to)
        .map_err(|e| io_error(format!("creating {}", to.display()), e))?;
    let path = to.join(a.kind.file());
    if !a.kind.chunked() {
        let n = small_file(
            disk_ctx.fetch,
            &a.parts[0].digest,
            a.kind.max_bytes(),
            &path,
        )
        .await?;
        return Ok((n, 1, 0));
    }
    let prefix = format!("{} ", a.kind.file());
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error(format!("creating {}", path.display()), e))?;
    // Parts an earlier pull wrote are kept only if its journal says so.
    if !journal.lines().iter().any(|l| l.starts_with(&prefix)) {
        file.set_len(0)
            .map_err(|e| io_error(format!("sizing {}", path.display()), e))?;
    }
    file.set_len(a.size)
        .map_err(|e| io_error(format!("sizing {}", path.display()), e))?;
    let ctx = Ctx {
        fetch: disk_ctx.fetch,
        what: a.kind.file(),
        disk: Arc::new(file),
        disk_size: a.size,
        fetched: Mutex::new(0),
    };
    let (written, resumed) = write_at_offsets(&ctx, &a.parts, journal, &prefix).await?;
    ctx.fetch.opts.progress.finish(ctx.what);
    let fetched = *ctx.fetched.locked();
    Ok((fetched, written, resumed))
}
