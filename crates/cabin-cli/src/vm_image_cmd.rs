//! `cabin vm push`, `vm pull`, `vm images`, `vm prune`: full VMs to and from OCI
//! registries in Lume's format (`cabin_machines::transfer`).

use cabin_containers::Host;
use cabin_machines::settings::Settings;
use cabin_machines::store;
use cabin_machines::transfer::{self, ImageRef, PullRequest, PushRequest};
use clap::Args;

use crate::report::{log_info, Failure, TextFormat};

/// Where an image lives and how it travels: the options push and pull share.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[arg(long, default_value = transfer::DEFAULT_REGISTRY)]
    registry: String,
    #[arg(long, default_value = transfer::DEFAULT_ORGANIZATION)]
    organization: String,
    /// Chunks compressed and uploaded, or downloaded and written, at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Plain HTTP with this registry (always for localhost and 127.0.0.0/8).
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The VM to push (stopped, or suspended with --with-memory).
    name: String,
    /// IMAGE:TAG
    image: String,
    /// More tags for the same image.
    #[arg(long, num_args = 1..)]
    additional_tags: Vec<String>,
    #[command(flatten)]
    at: RegistryArgs,
    #[arg(long)]
    storage: Option<String>,
    /// Uncompressed MiB per disk chunk.
    #[arg(long, default_value_t = 512)]
    chunk_size_mb: u64,
    /// The disk as one layer (`disk.img`) instead of chunks.
    #[arg(long)]
    single_layer: bool,
    /// Compress the disk and print the manifest that would be pushed; contact no
    /// registry.
    #[arg(long)]
    dry_run: bool,
    /// Push a suspended VM with its saved memory, so that `vm pull` and `vm run` of the
    /// image resume it where it was instead of booting it. Anyone who can pull the
    /// image gets the guest's memory: what its programs held (keys, passwords, open
    /// sessions) and its random number generator's state. Clients that read only
    /// Lume's layers get the VM without it, and boot it.
    #[arg(long)]
    with_memory: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// IMAGE:TAG
    image: String,
    /// The new VM's name (default IMAGE_TAG).
    name: Option<String>,
    #[command(flatten)]
    at: RegistryArgs,
    #[arg(long)]
    storage: Option<String>,
    /// Keep the image in the cache so that more VMs from it are clones, not downloads
    /// (always on with the setting cachingEnabled).
    #[arg(long)]
    cache: bool,
    /// Leave out the saved memory an image pushed with --with-memory carries: the VM
    /// boots at its first run instead of resuming. Resuming loads the publisher's saved
    /// machine state into QEMU (sandboxed, as the VM's own user when cabin runs as
    /// root): pull images with memory only from publishers you trust.
    #[arg(long)]
    without_memory: bool,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// The image a push or pull names, and its registry options with a progress bar.
fn image_and_options(
    host: &Host,
    image: &str,
    at: &RegistryArgs,
) -> Result<(ImageRef, cabin_image::registry::RegistryOptions), Failure> {
    let image = ImageRef::parse(image, &at.registry, &at.organization)?;
    let mut opts = transfer::registry_options(host, &at.registry)?;
    opts.parallel = at.parallel.clamp(1, 64);
    opts.insecure = at.insecure;
    opts.progress = crate::progress::hook();
    Ok((image, opts))
}

pub async fn push(host: &Host, s: &Settings, a: PushArgs) -> Result<i32, Failure> {
    let (image, opts) = image_and_options(host, &a.image, &a.at)?;
    let vm = store::find(s, &a.name, a.storage.as_deref())?;
    let started = std::time::Instant::now();
    let req = PushRequest {
        vm: &vm,
        image: &image,
        additional_tags: &a.additional_tags,
        chunk_size_mb: a.chunk_size_mb,
        single_layer: a.single_layer,
        dry_run: a.dry_run,
        with_memory: a.with_memory,
    };
    let r = transfer::push(&req, opts).await?;
    if a.dry_run {
        println!("{}", r.manifest);
        log_info(&format!(
            "Dry run complete name={} image={image} digest={} chunks={} seconds={:.1} (nothing was sent)",
            vm.name,
            r.manifest_digest,
            r.chunks,
            started.elapsed().as_secs_f64()
        ));
    } else {
        log_info(&format!(
            "Push complete name={} image={image} digest={} chunks={} uploaded={} ({}) skipped={} resumed={} seconds={:.1}",
            vm.name,
            r.manifest_digest,
            r.chunks,
            r.uploaded,
            mib(r.uploaded_bytes),
            r.skipped,
            r.resumed,
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(0)
}

pub async fn pull(host: &Host, s: &Settings, a: PullArgs) -> Result<i32, Failure> {
    let (image, opts) = image_and_options(host, &a.image, &a.at)?;
    let started = std::time::Instant::now();
    let req = PullRequest {
        image: &image,
        name: a.name.as_deref(),
        storage: a.storage.as_deref(),
        cache: a.cache,
        without_memory: a.without_memory,
    };
    let o = transfer::pull(s, &req, opts).await?;
    match &o.memory {
        transfer::Memory::None => {}
        transfer::Memory::Resumes => log_info(&format!(
            "The image carries its VM's saved memory name={}: its first run resumes it where it was suspended",
            o.vm.name
        )),
        transfer::Memory::LeftOut(why) => eprintln!(
            "The image's saved memory was left out ({why}); {} boots at its first run",
            o.vm.name
        ),
    }
    let how = match &o.pulled {
        Some(p) => format!(
            "fetched={} parts_written={} parts_resumed={}",
            mib(p.fetched_bytes),
            p.parts_written,
            p.parts_resumed
        ),
        None => "fetched=0 (cloned from the cache)".into(),
    };
    log_info(&format!(
        "Pull complete image={image} name={} location={} digest={} {how} seconds={:.1}",
        o.vm.name,
        o.vm.location_name,
        o.manifest_digest,
        started.elapsed().as_secs_f64()
    ));
    Ok(0)
}

pub fn images(s: &Settings, format: TextFormat) -> Result<i32, Failure> {
    let list = transfer::images(s);
    match format {
        TextFormat::Json => println!("{}", cabin_machines::details::lume_pretty(&list)),
        TextFormat::Text => {
            for i in &list {
                println!("{}:{}", i.repository, i.image_id);
            }
        }
    }
    Ok(0)
}

pub fn prune(s: &Settings) -> Result<i32, Failure> {
    transfer::prune(s)?;
    log_info("Successfully removed cached images");
    Ok(0)
}
