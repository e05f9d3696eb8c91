//! Lume's image routes: `POST /lume/vms/push` (in the background), `POST /lume/pull`
//! (synchronous), `POST /lume/pull/start` (in the background, its progress shown by
//! `GET /lume/vms/:name` as `status: "pulling"` and `downloadProgress`), `GET
//! /lume/images`, `POST /lume/prune`. Progress lives in this server's memory, as in
//! Lume (`cabin_machines::activity`, shared with the web console).

use axum::http::StatusCode;
use cabin_image::registry::ProgressHook;
use cabin_machines::store;
use cabin_machines::transfer::{self, ImageRef, PullRequest, PushRequest};
use serde::Serialize;

use crate::app::{App, Request};
use crate::wire::{self, ApiError, Fields, Reply};
use cabin_machines::activity::Direction;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pulling<'a> {
    name: &'a str,
    status: &'static str,
    download_progress: f64,
}

/// What `GET /lume/vms/:name` says about a background pull of `name`, if there is one.
pub fn pull_status(app: &App, name: &str) -> Option<Result<Reply, ApiError>> {
    let t = app
        .transfers
        .get(name)
        .filter(|t| t.direction == Direction::Pull)?;
    match t.error {
        None => Some(Ok(Reply::ok(&Pulling {
            name,
            status: "pulling",
            download_progress: t.percent,
        }))),
        Some(e) => Some(Err(ApiError::new(format!("Pull failed for '{name}': {e}")))),
    }
}

fn storage(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

fn registry_and_org(r: &Option<String>, o: &Option<String>) -> (String, String) {
    (
        r.clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| transfer::DEFAULT_REGISTRY.into()),
        o.clone()
            .unwrap_or_else(|| transfer::DEFAULT_ORGANIZATION.into()),
    )
}

pub fn push(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let p: wire::Push = wire::body(req.body)?;
    let (registry, org) = registry_and_org(&p.registry, &p.organization);
    let Some(first) = p.tags.first() else {
        return Err(ApiError::new("At least one tag is required to push"));
    };
    let image = ImageRef::parse(&format!("{}:{first}", p.image_name), &registry, &org)?;
    let s = app.settings()?;
    let vm = store::find(&s, &p.name, storage(&p.storage))?;
    let with_memory = p.with_memory.unwrap_or(false);
    if vm.is_running() {
        return Err(ApiError::new(
            transfer::running_refusal(&vm, with_memory).to_string(),
        ));
    }
    let mut opts = transfer::registry_options(&app.host, &registry)?;
    let counter = app
        .transfers
        .begin(&vm.name, Direction::Push, &image.to_string())?;
    opts.progress = ProgressHook(Some(counter));
    let (log, transfers) = (app.log.clone(), app.transfers.clone());
    let more: Vec<String> = p.tags[1..].to_vec();
    let chunk = p.chunk_size_mb.unwrap_or(512);
    let single = p.single_layer.unwrap_or(false);
    let (name, image_name) = (p.name.clone(), p.image_name.clone());
    in_background(move || async move {
        let req = PushRequest {
            vm: &vm,
            image: &image,
            additional_tags: &more,
            chunk_size_mb: chunk,
            single_layer: single,
            dry_run: false,
            with_memory,
        };
        match transfer::push(&req, opts).await {
            Ok(r) => {
                transfers.end(&vm.name, Ok(()));
                log.info(&format!(
                    "Push complete name={} image={image} digest={} uploaded={} skipped={} resumed={}",
                    vm.name, r.manifest_digest, r.uploaded, r.skipped, r.resumed
                ))
            }
            Err(e) => {
                transfers.end(&vm.name, Err(e.to_string()));
                log.error(&format!("Push failed name={} image={image}: {e}", vm.name))
            }
        }
    });
    app.log
        .info(&format!("Push initiated name={name} image={image_name}"));
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Started<'a> {
        message: &'static str,
        name: &'a str,
        image_name: &'a str,
        tags: &'a [String],
    }
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &Started {
            message: "Push initiated in background",
            name: &name,
            image_name: &image_name,
            tags: &p.tags,
        },
    ))
}

/// A pull as the API asks for it, owned so that it can move to a thread of its own.
struct PullJob {
    settings: cabin_machines::settings::Settings,
    image: ImageRef,
    vm_name: String,
    storage: Option<String>,
}

impl PullJob {
    async fn run(
        &self,
        opts: cabin_image::registry::RegistryOptions,
    ) -> Result<transfer::PullOutcome, store::VmError> {
        let req = PullRequest {
            image: &self.image,
            name: Some(&self.vm_name),
            storage: self.storage.as_deref(),
            cache: false,
            without_memory: false,
        };
        transfer::pull(&self.settings, &req, opts).await
    }
}

/// `POST /lume/pull` (wait) and `POST /lume/pull/start` (background).
pub fn pull(app: &App, req: &Request, background: bool) -> Result<Reply, ApiError> {
    let p: wire::Pull = wire::body(req.body)?;
    let (registry, org) = registry_and_org(&p.registry, &p.organization);
    let image = ImageRef::parse(&p.image, &registry, &org)?;
    let name = p.name.clone().filter(|n| !n.is_empty());
    // pull/start reports `name ?? image-without-tag`, and polling uses that name:
    // the VM gets it too.
    let vm_name = match (&name, background) {
        (Some(n), _) => n.clone(),
        (None, true) => image.name.clone(),
        (None, false) => format!("{}_{}", image.name, image.tag),
    };
    let s = app.settings()?;
    let mut opts = transfer::registry_options(&app.host, &registry)?;
    let store_name = store::normalize_name(&vm_name)?;
    if store::find(&s, &store_name, storage(&p.storage)).is_ok() {
        return Err(store::VmError::Exists(store_name).into());
    }
    let job = PullJob {
        settings: s,
        image,
        vm_name,
        storage: p.storage.clone().filter(|s| !s.is_empty()),
    };
    if !background {
        let r = tokio::runtime::Handle::current().block_on(job.run(opts))?;
        app.log.info(&format!(
            "Image pulled image={} name={}",
            job.image, r.vm.name
        ));
        return Ok(Reply::ok(&Fields(&[
            ("message", "Image pulled successfully"),
            ("image", &p.image),
            ("name", name.as_deref().unwrap_or("default")),
        ])));
    }
    let counter = app
        .transfers
        .begin(&store_name, Direction::Pull, &job.image.to_string())?;
    opts.progress = ProgressHook(Some(counter));
    let (transfers, log) = (app.transfers.clone(), app.log.clone());
    let key = store_name.clone();
    let reported = name.clone().unwrap_or_else(|| job.image.name.clone());
    in_background(move || async move {
        let r = job.run(opts).await;
        let image = &job.image;
        match r {
            Ok(o) => {
                transfers.end(&key, Ok(()));
                log.info(&format!("Image pulled image={image} name={}", o.vm.name));
            }
            Err(e) => {
                log.error(&format!("Pull failed image={image} name={key}: {e}"));
                transfers.end(&key, Err(e.to_string()));
            }
        }
    });
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &Fields(&[
            ("message", "Pull started"),
            ("name", &reported),
            ("image", &p.image),
        ]),
    ))
}

/// Runs a transfer on a thread of its own (its futures hold non-Send borrows across
/// awaits, so they get a current-thread runtime rather than the server's).
fn in_background<F, Fut>(make: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(make()),
            Err(e) => eprintln!("cabin serve: no runtime for a transfer: {e}"),
        }
    });
}

pub fn images(app: &App) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&transfer::images(&app.settings()?)))
}

pub fn prune(app: &App) -> Result<Reply, ApiError> {
    transfer::prune(&app.settings()?)?;
    Ok(Reply::message(
        StatusCode::OK,
        "Successfully removed cached images",
    ))
}
