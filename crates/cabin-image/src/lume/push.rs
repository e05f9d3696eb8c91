//! Pushing a VM in Lume's OCI format: the config blob, the NVRAM layer, and the disk
//! as gzip chunks compressed and uploaded several at a time. A chunk that is all hole
//! is compressed once per size; a blob is uploaded once however many offsets list it;
//! a blob the registry has is skipped. An interrupted push run again resumes: a journal
//! in the work directory names each chunk already uploaded with its digest, so those
//! chunks are neither compressed nor sent again (as long as the disk is unchanged:
//! the journal is keyed by the disk's identity, size and modification time); the rest
//! are compressed (deterministically) and uploaded unless the registry has them.

use cabin_base::sync::Locked;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

use super::attachment::{self, Attachment};
use super::gzip::{self, Compressed};
use super::journal::Journal;
use super::manifest::{self, Descriptor, Manifest, VmDescription, MAX_NVRAM_BYTES};
use super::{io_error, media, retryable, LumeError};
use crate::registry::{auth_of, monolithic_client_for, RegistryOptions};
use crate::store::sha256_hex;

/// What a push is asked to do beyond the registry options.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub registry: RegistryOptions,
    /// Uncompressed bytes per disk chunk (Lume: `--chunk-size-mb`, 512 MiB).
    pub chunk_size: u64,
    /// One disk layer (`disk.img`) instead of chunks.
    pub single_layer: bool,
    /// Where compressed chunks wait for their upload (removed as they go).
    pub work_dir: PathBuf,
    /// Compress and describe everything, contact no registry (Lume's `--dry-run`).
    pub dry_run: bool,
    /// cabin's own files to carry after Lume's layers (a suspended VM's state).
    pub attachments: Vec<(Attachment, PathBuf)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    pub manifest_digest: String,
    /// Disk layers in the manifest.
    pub chunks: usize,
    /// Blobs sent, and their bytes.
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Chunks an interrupted push had uploaded, taken from its journal without being
    /// compressed again.
    pub resumed: usize,
    /// The manifest pushed (or, in a dry run, that would have been).
    pub manifest: String,
}

/// The push journal in the work directory (kept when a push fails, for the next run).
pub const JOURNAL: &str = "push-journal";

pub const MIN_CHUNK: u64 = 1 << 20;
pub const MAX_CHUNK: u64 = 4 << 30;

struct Shared {
    client: Client,
    reference: Reference,
    image: String,
    opts: PushOptions,
    /// One upload per blob digest: Some(bytes) sent, None skipped.
    uploads: Mutex<HashMap<String, Arc<OnceCell<Option<u64>>>>>,
    /// The compressed form of an all-hole chunk, per length.
    holes: Mutex<HashMap<u64, Arc<OnceCell<Compressed>>>>,
    /// Chunks an earlier run of this push uploaded (from the journal), by index.
    done_before: HashMap<usize, Compressed>,
    /// None in a dry run: nothing is uploaded, so nothing is recorded.
    journal: Option<Mutex<Journal>>,
    resumed: AtomicUsize,
}

/// What the journal records of a chunk: `INDEX DIGEST SIZE UNCOMPRESSED-DIGEST
/// UNCOMPRESSED-SIZE`.
fn journal_line(index: usize, c: &Compressed) -> String {
    format!(
        "{index} {} {} {} {}",
        c.digest, c.size, c.uncompressed_digest, c.uncompressed_size
    )
}

fn parse_journal_line(line: &str) -> Option<(usize, Compressed)> {
    let mut w = line.split(' ');
    let index = w.next()?.parse().ok()?;
    let digest = w.next()?.to_string();
    let size = w.next()?.parse().ok()?;
    let uncompressed_digest = w.next()?.to_string();
    let uncompressed_size = w.next()?.parse().ok()?;
    let valid = |d: &str| d.len() == 71 && d.starts_with("sha256:");
    (valid(&digest) && valid(&uncompressed_digest) && w.next().is_none()).then_some((
        index,
        Compressed {
            digest,
            size,
            uncompressed_digest,
            uncompressed_size,
        },
    ))
}

/// What a journal is about: this very disk content, cut this way. A disk written since
/// (its modification time or size moved) starts a fresh journal.
fn journal_key(disk: &File, chunk: u64) -> std::io::Result<String> {
    let m = disk.metadata()?;
    Ok(format!(
        "disk={}:{} size={} mtime={}.{:09} chunk={chunk}",
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

fn registry_err(image: &str, e: &oci_client::errors::OciDistributionError) -> LumeError {
    super::registry_err(image, e, super::Direction::Push)
}

impl Shared {
    /// Uploads a blob from a file (or bytes) unless the registry has it; once per digest.
    async fn upload(
        &self,
        digest: &str,
        size: u64,
        source: Source<'_>,
    ) -> Result<Option<u64>, LumeError> {
        if self.opts.dry_run {
            return Ok(None);
        }
        let cell = self
            .uploads
            .locked()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let r = cell
            .get_or_try_init(|| async {
                let mut attempt = 0;
                loop {
                    match self.upload_once(digest, size, &source).await {
                        Ok(v) => return Ok(v),
                        Err(e) if attempt < self.opts.registry.retries && retryable(&e) => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1).min(5)))
                                .await;
                        }
                        Err(e) => return Err(registry_err(&self.image, &e)),
                    }
                }
            })
            .await?;
        Ok(*r)
    }

    async fn upload_once(
        &self,
        digest: &str,
        size: u64,
        source: &Source<'_>,
    ) -> Result<Option<u64>, oci_client::errors::OciDistributionError> {
        if self.client.blob_exists(&self.reference, digest).await? {
            return Ok(None);
        }
        match source {
            Source::Bytes(b) => {
                self.client
                    .push_blob(&self.reference, b.to_vec(), digest)
                    .await?;
            }
            Source::File(path) => {
                let file = tokio::fs::File::open(path).await?;
                let stream = futures::stream::try_unfold(file, |mut f| async move {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.truncate(n);
                    Ok(Some((bytes::Bytes::from(buf), f)))
                });
                self.client
                    .push_blob_stream(&self.reference, stream, digest, Some(size))
                    .await?;
            }
        }
        Ok(Some(size))
    }

    /// Compresses chunk `index` (`offset`, `len`) and uploads it.
    async fn chunk(
        &self,
        disk: &Arc<File>,
        index: usize,
        offset: u64,
        len: u64,
    ) -> Result<Compressed, LumeError> {
        if let Some(c) = self.done_before.get(&index) {
            if c.uncompressed_size == len && self.registry_has(&c.digest).await {
                self.resumed.fetch_add(1, Ordering::Relaxed);
                return Ok(c.clone());
            }
        }
        let c = self.compress_and_upload(disk, index, offset, len).await?;
        if let Some(j) = &self.journal {
            j.locked()
                .record(&journal_line(index, &c))
                .map_err(|e| io_error("recording progress in the push journal", e))?;
        }
        Ok(c)
    }

    /// Whether the registry holds `digest` (a failed check counts as no: the chunk is
    /// then compressed and its upload tried, which reports the registry's error).
    async fn registry_has(&self, digest: &str) -> bool {
        self.client
            .blob_exists(&self.reference, digest)
            .await
            .unwrap_or(false)
    }

    async fn compress_and_upload(
        &self,
        disk: &Arc<File>,
        index: usize,
        offset: u64,
        len: u64,
    ) -> Result<Compressed, LumeError> {
        let hole = {
            let disk = disk.clone();
            tokio::task::spawn_blocking(move || gzip::is_hole(&disk, offset, len))
                .await
                .unwrap_or(false)
        };
        let tmp = self.opts.work_dir.join(format!("chunk-{index}.gz"));
        if hole {
            let cell = self.holes.locked().entry(len).or_default().clone();
            let c = cell
                .get_or_try_init(|| async {
                    let c = compress(tmp.clone(), None, offset, len).await?;
                    self.upload(&c.digest, c.size, Source::File(&tmp)).await?;
                    let _ = std::fs::remove_file(&tmp);
                    Ok::<_, LumeError>(c)
                })
                .await?;
            return Ok(c.clone());
        }
        let c = compress(tmp.clone(), Some(disk.clone()), offset, len).await?;
        let r = self.upload(&c.digest, c.size, Source::File(&tmp)).await;
        let _ = std::fs::remove_file(&tmp);
        r?;
        Ok(c)
    }
}

impl Shared {
    /// Uploads one of cabin's attachments (after the disk's chunks) and describes its
    /// layers: a small one whole, a chunked one in `chunk`-byte gzip slices.
    async fn attach(
        &self,
        kind: Attachment,
        path: &Path,
        chunk: u64,
    ) -> Result<Vec<Descriptor>, LumeError> {
        let what = kind.file();
        let file =
            File::open(path).map_err(|e| io_error(format!("opening {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error(format!("reading {}", path.display()), e))?
            .len();
        if size > kind.max_bytes() {
            return Err(LumeError::invalid(
                &self.image,
                format!("{what} is larger than {} bytes", kind.max_bytes()),
            ));
        }
        let mut title = BTreeMap::new();
        title.insert(media::TITLE.to_string(), what.to_string());
        if !kind.chunked() {
            let bytes = std::fs::read(path)
                .map_err(|e| io_error(format!("reading {}", path.display()), e))?;
            let digest = format!("sha256:{}", sha256_hex(&bytes));
            self.upload(&digest, bytes.len() as u64, Source::Bytes(&bytes))
                .await?;
            return Ok(vec![Descriptor {
                annotations: title,
                digest,
                media_type: kind.media_type().into(),
                size: bytes.len() as u64,
            }]);
        }
        let file = Arc::new(file);
        let slices: Vec<(usize, u64, u64)> = (0..size.div_ceil(chunk).max(1))
            .map(|i| (i as usize, i * chunk, chunk.min(size - i * chunk)))
            .collect();
        let progress = self.opts.registry.progress.clone();
        progress.start(what, size, 0);
        let chunks: Vec<Compressed> = futures::stream::iter(slices.iter().map(|&(i, off, len)| {
            let file = file.clone();
            let progress = progress.clone();
            async move {
                // Numbered after any disk chunk, for its file in the work directory.
                let c = self
                    .compress_and_upload(&file, ATTACHMENT_INDEX + i, off, len)
                    .await?;
                progress.advance(what, len);
                Ok::<_, LumeError>(c)
            }
        }))
        .buffered(self.opts.registry.parallel.max(1))
        .try_collect()
        .await?;
        progress.finish(what);
        Ok(chunks
            .iter()
            .zip(&slices)
            .map(|(c, &(i, off, len))| {
                let mut a = BTreeMap::new();
                a.insert(media::TITLE.to_string(), format!("{what}.part.{i}"));
                a.insert(attachment::PART_OFFSET.to_string(), off.to_string());
                a.insert(attachment::UNCOMPRESSED_SIZE.to_string(), len.to_string());
                a.insert(
                    attachment::UNCOMPRESSED_DIGEST.to_string(),
                    c.uncompressed_digest.clone(),
                );
                a.insert(attachment::TOTAL_SIZE.to_string(), size.to_string());
                Descriptor {
                    annotations: a,
                    digest: c.digest.clone(),
                    media_type: kind.media_type().into(),
                    size: c.size,
                }
            })
            .collect())
    }
}

/// Where attachment chunks' numbers start (disk chunks are numbered from 0).
const ATTACHMENT_INDEX: usize = 1 << 40;

enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Compresses a disk slice (or zeros, without a disk) into `tmp`, off the async threads.
async fn compress(
    tmp: PathBuf,
    disk: Option<Arc<File>>,
    offset: u64,
    len: u64,
) -> Result<Compressed, LumeError> {
    tokio::task::spawn_blocking(move || {
        // A chunk may be of a suspended guest's memory: its owner's only.
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error(format!("creating {}", tmp.display()), e))?;
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let c = match &disk {
            Some(d) => gzip::compress_slice(d, offset, len, &mut w),
            None => gzip::compress_zeros(len, &mut w),
        }
        .and_then(|c| {
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_data()?;
            Ok(c)
        })
        .map_err(|e| io_error(format!("compressing the disk at offset {offset}"), e))?;
        Ok(c)
    })
    .await
    .map_err(|e| LumeError::Io(format!("compressing the disk: {e}")))?
}

/// `registry/organization/image` and a tag as an OCI reference.
pub fn reference(repository: &str, tag: &str) -> Result<Reference, LumeError> {
    format!("{repository}:{tag}").parse().map_err(|e| {
        LumeError::invalid(
            &format!("{repository}:{tag}"),
            format!("not a valid image reference ({e})"),
        )
    })
}

/// Pushes a VM (its disk, NVRAM file and description) to `repository` under `tags`.
pub async fn push(
    disk_path: &Path,
    nvram_path: &Path,
    vm: &VmDescription,
    repository: &str,
    tags: &[String],
    opts: &PushOptions,
) -> Result<PushReport, LumeError> {
    let first = tags
        .first()
        .ok_or_else(|| LumeError::invalid(repository, "no tag to push"))?;
    let image = format!("{repository}:{first}");
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&opts.chunk_size) {
        return Err(LumeError::invalid(
            &image,
            "the chunk size must be 1 to 4096 MiB",
        ));
    }
    let r = reference(repository, first)?;
    let client = monolithic_client_for(&r, opts.registry.insecure);
    if !opts.dry_run {
        client
            .auth(&r, &auth_of(&opts.registry), RegistryOperation::Push)
            .await
            .map_err(|e| registry_err(&image, &e))?;
    }
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| io_error(format!("creating {}", opts.work_dir.display()), e))?;
    // Compressed chunks a killed push left behind are made again (or not needed).
    for e in std::fs::read_dir(&opts.work_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("chunk-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let disk = File::open(disk_path)
        .map_err(|e| io_error(format!("opening {}", disk_path.display()), e))?;
    let disk_size = disk
        .metadata()
        .map_err(|e| io_error("reading the disk's size", e))?
        .len();
    let nvram = std::fs::read(nvram_path)
        .map_err(|e| io_error(format!("reading {}", nvram_path.display()), e))?;
    if nvram.len() as u64 > MAX_NVRAM_BYTES {
        return Err(LumeError::invalid(
            &image,
            "nvram.bin is larger than 128 MiB",
        ));
    }
    let chunk = if opts.single_layer {
        disk_size.max(1)
    } else {
        opts.chunk_size
    };
    let journal_path = opts.work_dir.join(JOURNAL);
    let journal = match opts.dry_run {
        true => None,
        false => Some(
            journal_key(&disk, chunk)
                .and_then(|key| Journal::open(&journal_path, "push", &key))
                .map_err(|e| io_error("opening the push journal", e))?,
        ),
    };
    let done_before = journal
        .iter()
        .flat_map(|j| j.lines())
        .filter_map(|l| parse_journal_line(l))
        .collect();
    let shared = Shared {
        client,
        reference: r,
        image: image.clone(),
        opts: opts.clone(),
        uploads: Mutex::default(),
        holes: Mutex::default(),
        done_before,
        journal: journal.map(Mutex::new),
        resumed: AtomicUsize::new(0),
    };
    let mut vm = vm.clone();
    vm.disk_size = disk_size;
    let config = manifest::config_blob(&vm);
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let nvram_digest = format!("sha256:{}", sha256_hex(&nvram));
    shared
        .upload(&config_digest, config.len() as u64, Source::Bytes(&config))
        .await?;
    shared
        .upload(&nvram_digest, nvram.len() as u64, Source::Bytes(&nvram))
        .await?;

    let slices: Vec<(usize, u64, u64)> = (0..disk_size.div_ceil(chunk).max(1))
        .map(|i| {
            let off = i * chunk;
            (i as usize, off, chunk.min(disk_size - off))
        })
        .collect();
    let progress = opts.registry.progress.clone();
    const ID: &str = "disk.img";
    progress.start(ID, disk_size, 0);
    let disk = Arc::new(disk);
    let shared_ref = &shared;
    let chunks: Vec<Compressed> = futures::stream::iter(slices.iter().map(|&(i, off, len)| {
        let disk = disk.clone();
        let progress = progress.clone();
        async move {
            let c = shared_ref.chunk(&disk, i, off, len).await?;
            progress.advance(ID, len);
            Ok::<_, LumeError>(c)
        }
    }))
    .buffered(opts.registry.parallel.max(1))
    .try_collect()
    .await?;
    progress.finish(ID);

    let title = |t: &str| -> BTreeMap<String, String> {
        [(media::TITLE.to_string(), t.to_string())].into()
    };
    let mut layers = vec![Descriptor {
        annotations: title("nvram.bin"),
        digest: nvram_digest,
        media_type: media::NVRAM.into(),
        size: nvram.len() as u64,
    }];
    let total = chunks.len();
    for (c, &(i, off, len)) in chunks.iter().zip(&slices) {
        let mut a = BTreeMap::new();
        a.insert(media::UNCOMPRESSED_SIZE.to_string(), len.to_string());
        a.insert(
            media::UNCOMPRESSED_DIGEST.to_string(),
            c.uncompressed_digest.clone(),
        );
        if opts.single_layer {
            a.insert(media::TITLE.to_string(), "disk.img".into());
        } else {
            a.insert(media::TITLE.to_string(), format!("disk.img.part.{i}"));
            a.insert(media::PART_NUMBER.to_string(), i.to_string());
            a.insert(media::PART_TOTAL.to_string(), total.to_string());
            a.insert(media::PART_OFFSET.to_string(), off.to_string());
            a.insert(media::CHUNK_SIZE.to_string(), len.to_string());
        }
        layers.push(Descriptor {
            annotations: a,
            digest: c.digest.clone(),
            media_type: media::DISK.into(),
            size: c.size,
        });
    }
    for (kind, path) in &opts.attachments {
        layers.extend(shared.attach(*kind, path, opts.chunk_size).await?);
    }
    let mut annotations = manifest::vm_annotations(&vm);
    annotations.insert(media::UPLOAD_TIME.into(), cabin_base::time::now_rfc3339());
    if !opts.single_layer {
        annotations.insert(media::TOTAL_UNCOMPRESSED_SIZE.into(), disk_size.to_string());
    }
    let m = Manifest {
        annotations,
        config: Descriptor {
            annotations: title("config.json"),
            digest: config_digest,
            media_type: media::CONFIG.into(),
            size: config.len() as u64,
        },
        layers,
        media_type: Some(media::MANIFEST.into()),
        schema_version: 2,
    };
    let bytes = m.to_bytes();
    for tag in tags.iter().filter(|_| !opts.dry_run) {
        let r = reference(repository, tag)?;
        shared
            .client
            .push_manifest_raw(
                &r,
                bytes.clone(),
                media::MANIFEST.parse().expect("a header value"),
            )
            .await
            .map_err(|e| registry_err(&format!("{repository}:{tag}"), &e))?;
    }
    // Done: the journal has served (it would only be consulted by a push of this same
    // disk, which finds its blobs in the registry anyway).
    let _ = std::fs::remove_file(&journal_path);
    let _ = std::fs::remove_dir(&opts.work_dir);
    let uploads: Vec<Option<u64>> = shared
        .uploads
        .locked()
        .values()
        .filter_map(|c| c.get().copied())
        .collect();
    Ok(PushReport {
        manifest_digest: format!("sha256:{}", sha256_hex(&bytes)),
        chunks: total,
        uploaded: uploads.iter().filter(|u| u.is_some()).count(),
        uploaded_bytes: uploads.iter().flatten().sum(),
        skipped: uploads.iter().filter(|u| u.is_none()).count(),
        resumed: shared.resumed.load(Ordering::Relaxed),
        manifest: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
