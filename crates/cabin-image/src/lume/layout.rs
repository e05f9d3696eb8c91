//! An image's disk layers as a plan of parts to write, checked before a byte is
//! fetched: every digest well formed, parts that tile the disk exactly (no overlap, no
//! gap, nothing past its end), sizes within bounds.

use std::collections::{BTreeMap, HashSet};

use super::attachment::{self, Attachment};
use super::manifest::{Descriptor, Manifest, MAX_CONFIG_BYTES, MAX_NVRAM_BYTES};
use super::{media, LumeError};

/// Largest disk accepted (64 TiB).
pub const MAX_DISK_BYTES: u64 = 64 << 40;
/// Most layers accepted in one manifest.
pub const MAX_LAYERS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    /// Apple's `bv41` block stream.
    Lz4,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Lume v0.3.0 and later: gzip chunks placed at offsets.
    Oci,
    /// Lume v0.2.x (LZ4 chunks) and older fallbacks: layers concatenated in order.
    Legacy,
}

/// One disk layer, to be decompressed and written at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub digest: String,
    pub compressed_size: u64,
    pub codec: Codec,
    pub offset: u64,
    /// Uncompressed bytes. None only in a legacy image without size annotations (then
    /// parts are written one after the other and offsets found as they go).
    pub size: Option<u64>,
    pub uncompressed_digest: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub format: Format,
    pub disk_size: u64,
    pub parts: Vec<Part>,
    pub nvram: Option<Descriptor>,
    pub config: Descriptor,
    /// Offsets are known for every part (false: write them in order, one at a time).
    pub offsets_known: bool,
    /// cabin's own files after Lume's layers, each in order of [`Attachment::ALL`].
    pub attachments: Vec<AttachmentPlan>,
    /// Why cabin's files were left out of the plan (malformed): the image is still
    /// the VM Lume's layers make, which boots.
    pub attachments_refused: Option<String>,
}

/// One of cabin's own files in the image: its parts (one raw part for a small one).
#[derive(Debug, Clone)]
pub struct AttachmentPlan {
    pub kind: Attachment,
    pub size: u64,
    pub parts: Vec<Part>,
}

pub fn check_digest(image: &str, d: &str) -> Result<(), LumeError> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(LumeError::invalid(
            image,
            format!("{d:?} is not a sha256 digest"),
        ))
    }
}

fn num(image: &str, l: &Descriptor, key: &str) -> Result<Option<u64>, LumeError> {
    l.annotation(key)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                LumeError::invalid(
                    image,
                    format!(
                        "layer {}: annotation {key} = {v:?} is not a number",
                        l.digest
                    ),
                )
            })
        })
        .transpose()
}

/// The codec of a disk layer by media type, None for a layer that is not the disk.
fn disk_codec(mt: &str, has_config: bool) -> Option<Codec> {
    let base = mt.split(';').next().unwrap_or(mt).trim();
    match base {
        media::DISK | media::FALLBACK_DISK_GZIP => Some(Codec::Gzip),
        media::LEGACY_DISK_LZ4 => Some(Codec::Lz4),
        media::FALLBACK_DISK_TAR => Some(Codec::Raw),
        media::LEGACY_NVRAM if !has_config => Some(Codec::Raw),
        _ => None,
    }
}

/// The order of pre-v0.2.0 split parts (`...;part.number=N`), else manifest order.
fn split_part_number(mt: &str) -> Option<u64> {
    mt.split(';')
        .filter_map(|p| p.trim().strip_prefix("part.number="))
        .next()
        .and_then(|n| n.parse().ok())
}

pub fn plan(
    image: &str,
    m: &Manifest,
    legacy_config_disk_size: Option<u64>,
) -> Result<Plan, LumeError> {
    if m.layers.len() > MAX_LAYERS {
        return Err(LumeError::invalid(
            image,
            format!("{} layers (at most {MAX_LAYERS})", m.layers.len()),
        ));
    }
    check_digest(image, &m.config.digest)?;
    if m.config.size > MAX_CONFIG_BYTES {
        return Err(LumeError::invalid(
            image,
            "the config blob is larger than 1 MiB",
        ));
    }
    for l in &m.layers {
        check_digest(image, &l.digest)?;
    }
    let format = if m.is_oci_format() {
        Format::Oci
    } else {
        Format::Legacy
    };
    let has_config = !m.config.digest.is_empty();
    let mut nvram = None;
    let mut disk: Vec<&Descriptor> = Vec::new();
    let mut attached: BTreeMap<Attachment, Vec<&Descriptor>> = BTreeMap::new();
    for l in &m.layers {
        let mt = l.media_type.as_str();
        if mt.starts_with(attachment::MEDIA_PREFIX) {
            // One this cabin does not know (a later cabin's) is skipped, as Lume
            // skips them all.
            if let Some(a) = Attachment::of_media_type(mt) {
                attached.entry(a).or_default().push(l);
            }
            continue;
        }
        let is_nvram = match format {
            Format::Oci => mt == media::NVRAM,
            Format::Legacy => mt == media::LEGACY_NVRAM && has_config,
        };
        if is_nvram {
            if nvram.is_some() {
                return Err(LumeError::invalid(image, "more than one NVRAM layer"));
            }
            if l.size > MAX_NVRAM_BYTES {
                return Err(LumeError::invalid(
                    image,
                    "the NVRAM layer is larger than 128 MiB",
                ));
            }
            nvram = Some(l.clone());
        } else if let Some(codec) = disk_codec(mt, has_config) {
            if format == Format::Oci && codec != Codec::Gzip {
                return Err(LumeError::invalid(
                    image,
                    format!("disk layer media type {mt} in an OCI-format image"),
                ));
            }
            disk.push(l);
        } else if mt == media::EMPTY || mt == media::LEGACY_CONFIG {
            // Lume's legacy format repeats its config as a layer; empty blobs carry nothing.
        } else {
            return Err(LumeError::invalid(
                image,
                format!("unknown layer media type {mt}"),
            ));
        }
    }
    if disk.is_empty() {
        return Err(LumeError::invalid(image, "it has no disk layers"));
    }
    let too_big = |what: &str, n: u64| -> Result<(), LumeError> {
        if n > MAX_DISK_BYTES {
            return Err(LumeError::invalid(
                image,
                format!("{what} {n} bytes is more than 64 TiB"),
            ));
        }
        Ok(())
    };
    let mut parts = Vec::with_capacity(disk.len());
    let (disk_size, offsets_known) = match format {
        Format::Oci => {
            let declared = m
                .annotation(media::TOTAL_UNCOMPRESSED_SIZE)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        LumeError::invalid(
                            image,
                            format!("{} = {v:?} is not a number", media::TOTAL_UNCOMPRESSED_SIZE),
                        )
                    })
                })
                .transpose()?;
            let single = disk.len() == 1 && disk[0].annotation(media::PART_OFFSET).is_none();
            let mut numbers = HashSet::new();
            for l in &disk {
                let size = match num(image, l, media::UNCOMPRESSED_SIZE)?.or(num(
                    image,
                    l,
                    media::CHUNK_SIZE,
                )?) {
                    Some(s) => s,
                    None => {
                        return Err(LumeError::invalid(
                            image,
                            format!("disk layer {} has no uncompressed size", l.digest),
                        ))
                    }
                };
                too_big("a disk part of", size)?;
                let offset = if single {
                    0
                } else {
                    let n = num(image, l, media::PART_NUMBER)?;
                    if let Some(n) = n {
                        if !numbers.insert(n) {
                            return Err(LumeError::invalid(
                                image,
                                format!("disk part number {n} appears twice"),
                            ));
                        }
                    }
                    num(image, l, media::PART_OFFSET)?.ok_or_else(|| {
                        LumeError::invalid(
                            image,
                            format!("disk layer {} has no part offset", l.digest),
                        )
                    })?
                };
                let ud = l.annotation(media::UNCOMPRESSED_DIGEST).map(str::to_string);
                if let Some(d) = &ud {
                    check_digest(image, d)?;
                }
                parts.push(Part {
                    digest: l.digest.clone(),
                    compressed_size: l.size,
                    codec: Codec::Gzip,
                    offset,
                    size: Some(size),
                    uncompressed_digest: ud,
                });
            }
            let end = tile(image, "disk", &mut parts, declared, MAX_DISK_BYTES)?;
            (end, true)
        }
        Format::Legacy => {
            let mut ordered = disk.clone();
            if ordered
                .iter()
                .all(|l| split_part_number(&l.media_type).is_some())
            {
                ordered.sort_by_key(|l| split_part_number(&l.media_type));
            }
            let mut offset = Some(0u64);
            for l in &ordered {
                let size = num(image, l, media::LEGACY_UNCOMPRESSED_SIZE)?.or(num(
                    image,
                    l,
                    media::UNCOMPRESSED_SIZE,
                )?);
                let codec = disk_codec(&l.media_type, has_config).expect("a disk layer");
                let size = if codec == Codec::Raw {
                    Some(size.unwrap_or(l.size))
                } else {
                    size
                };
                let ud = l
                    .annotation(media::LEGACY_UNCOMPRESSED_DIGEST)
                    .or(l.annotation(media::UNCOMPRESSED_DIGEST))
                    .map(str::to_string);
                if let Some(d) = &ud {
                    check_digest(image, d)?;
                }
                parts.push(Part {
                    digest: l.digest.clone(),
                    compressed_size: l.size,
                    codec,
                    offset: offset.unwrap_or(0),
                    size,
                    uncompressed_digest: ud,
                });
                offset = match (offset, size) {
                    (Some(o), Some(s)) => Some(
                        o.checked_add(s)
                            .ok_or_else(|| LumeError::invalid(image, "part sizes overflow"))?,
                    ),
                    _ => None,
                };
            }
            let declared = m
                .annotation(media::LEGACY_DISK_SIZE)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .or(m
                    .config
                    .annotation(media::LEGACY_CONFIG_DISK_SIZE)
                    .and_then(|v| v.trim().parse().ok()))
                .or(legacy_config_disk_size);
            let size = match (declared, offset) {
                (Some(d), Some(end)) if end > d => {
                    return Err(LumeError::invalid(
                        image,
                        format!(
                            "the disk parts add up to {end} bytes, past the declared disk size {d}"
                        ),
                    ))
                }
                (Some(d), _) => d,
                (None, Some(end)) => end,
                (None, None) => {
                    return Err(LumeError::invalid(
                        image,
                        "neither the disk's size nor its parts' sizes are given",
                    ))
                }
            };
            too_big("a disk of", size)?;
            (size, offset.is_some())
        }
    };
    let mut seen = BTreeMap::new();
    same_bytes_everywhere(image, &mut seen, &parts)?;
    // cabin's own files only add to the VM Lume's layers make: malformed ones are left
    // out (the VM boots), never a reason to refuse the image.
    let attachments = attached
        .into_iter()
        .map(|(kind, layers)| attachment_plan(image, kind, &layers))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|attachments| {
            for a in &attachments {
                same_bytes_everywhere(image, &mut seen, &a.parts)?;
            }
            Ok(attachments)
        });
    let (attachments, attachments_refused) = match attachments {
        Ok(a) => (a, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(Plan {
        format,
        disk_size,
        parts,
        nvram,
        config: m.config.clone(),
        offsets_known,
        attachments,
        attachments_refused,
    })
}

/// One blob listed at several offsets must mean the same bytes at each: `parts` are
/// checked against each other and against those `seen` before (digest: uncompressed
/// size and digest), and added to them.
fn same_bytes_everywhere(
    image: &str,
    seen: &mut BTreeMap<String, (Option<u64>, Option<String>)>,
    parts: &[Part],
) -> Result<(), LumeError> {
    for p in parts {
        let entry = seen
            .entry(p.digest.clone())
            .or_insert_with(|| (p.size, p.uncompressed_digest.clone()));
        if entry.0 != p.size || entry.1 != p.uncompressed_digest {
            return Err(LumeError::invalid(
                image,
                format!(
                    "blob {} is listed with different uncompressed sizes or digests",
                    p.digest
                ),
            ));
        }
    }
    Ok(())
}

/// Sorts `parts` by offset and checks that they tile `0..end` exactly (no overlap, no
/// gap, and `end` the declared size if there is one, at most `max`); returns `end`.
fn tile(
    image: &str,
    what: &str,
    parts: &mut [Part],
    declared: Option<u64>,
    max: u64,
) -> Result<u64, LumeError> {
    parts.sort_by_key(|p| p.offset);
    let mut end = 0u64;
    for p in parts.iter() {
        let size = p.size.unwrap_or(0);
        if p.offset < end {
            return Err(LumeError::invalid(
                image,
                format!("{what} parts overlap at offset {}", p.offset),
            ));
        }
        if p.offset > end {
            return Err(LumeError::invalid(
                image,
                format!(
                    "the {what} parts leave a gap from offset {end} to {}",
                    p.offset
                ),
            ));
        }
        end = p
            .offset
            .checked_add(size)
            .ok_or_else(|| LumeError::invalid(image, "part offsets overflow"))?;
        if end > max {
            return Err(LumeError::invalid(
                image,
                format!("a {what} of {end} bytes is more than {max} bytes"),
            ));
        }
    }
    if let Some(d) = declared {
        if end > d {
            return Err(LumeError::invalid(
                image,
                format!("the {what} parts end at {end}, past the declared {what} size {d}"),
            ));
        }
        if end < d {
            return Err(LumeError::invalid(
                image,
                format!("the {what} parts end at {end}, leaving a gap before the declared {what} size {d}"),
            ));
        }
    }
    Ok(end)
}

/// One of cabin's attachments as parts: a raw layer whole, or gzip chunks that tile it.
fn attachment_plan(
    image: &str,
    kind: Attachment,
    layers: &[&Descriptor],
) -> Result<AttachmentPlan, LumeError> {
    let what = kind.file();
    if !kind.chunked() {
        let [l] = layers else {
            return Err(LumeError::invalid(
                image,
                format!("more than one {what} layer"),
            ));
        };
        if l.size > kind.max_bytes() {
            return Err(LumeError::invalid(
                image,
                format!("the {what} layer is larger than {} bytes", kind.max_bytes()),
            ));
        }
        return Ok(AttachmentPlan {
            kind,
            size: l.size,
            parts: vec![Part {
                digest: l.digest.clone(),
                compressed_size: l.size,
                codec: Codec::Raw,
                offset: 0,
                size: Some(l.size),
                uncompressed_digest: None,
            }],
        });
    }
    let mut total = None;
    let mut parts = Vec::with_capacity(layers.len());
    for l in layers {
        let need = |key: &str| {
            num(image, l, key)?.ok_or_else(|| {
                LumeError::invalid(image, format!("{what} layer {} has no {key}", l.digest))
            })
        };
        let t = need(attachment::TOTAL_SIZE)?;
        if total.is_some_and(|was| was != t) {
            return Err(LumeError::invalid(
                image,
                format!("the {what} layers declare different total sizes"),
            ));
        }
        total = Some(t);
        let ud = l
            .annotation(attachment::UNCOMPRESSED_DIGEST)
            .map(str::to_string);
        if let Some(d) = &ud {
            check_digest(image, d)?;
        }
        parts.push(Part {
            digest: l.digest.clone(),
            compressed_size: l.size,
            codec: Codec::Gzip,
            offset: need(attachment::PART_OFFSET)?,
            size: Some(need(attachment::UNCOMPRESSED_SIZE)?),
            uncompressed_digest: ud,
        });
    }
    let size = tile(image, what, &mut parts, total, kind.max_bytes())?;
    Ok(AttachmentPlan { kind, size, parts })
}

impl Plan {
    /// The parts grouped by blob, each blob once with every offset it goes to.
    pub fn groups(&self) -> Vec<(&Part, Vec<u64>)> {
        groups(&self.parts)
    }

    /// Compressed bytes to fetch (each blob once, NVRAM included).
    pub fn transfer_bytes(&self) -> u64 {
        self.groups()
            .iter()
            .map(|(p, _)| p.compressed_size)
            .sum::<u64>()
            + self.nvram.as_ref().map_or(0, |n| n.size)
    }
}

/// Parts grouped by blob, each blob once with every offset it goes to.
pub fn groups(parts: &[Part]) -> Vec<(&Part, Vec<u64>)> {
    let mut out: Vec<(&Part, Vec<u64>)> = Vec::new();
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for p in parts {
        match index.get(p.digest.as_str()) {
            Some(&i) => out[i].1.push(p.offset),
            None => {
                index.insert(&p.digest, out.len());
                out.push((p, vec![p.offset]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// A 10-byte layer of blob `c` with numeric annotations.
    fn layer(c: char, media_type: &str, annotations: &[(&str, u64)]) -> Descriptor {
        Descriptor {
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            digest: d(c),
            media_type: media_type.into(),
            size: 10,
        }
    }

    fn chunk(c: char, number: u64, offset: u64, size: u64) -> Descriptor {
        layer(
            c,
            media::DISK,
            &[
                (media::PART_NUMBER, number),
                (media::PART_OFFSET, offset),
                (media::UNCOMPRESSED_SIZE, size),
            ],
        )
    }

    fn manifest(layers: Vec<Descriptor>, total: Option<u64>) -> Manifest {
        Manifest {
            annotations: total
                .map(|t| (media::TOTAL_UNCOMPRESSED_SIZE.to_string(), t.to_string()))
                .into_iter()
                .collect(),
            config: Descriptor {
                annotations: BTreeMap::new(),
                digest: d('c'),
                media_type: media::CONFIG.into(),
                size: 10,
            },
            layers,
            media_type: None,
            schema_version: 2,
        }
    }

    #[test]
    fn chunks_must_tile_the_disk() {
        let ok = manifest(
            vec![
                chunk('a', 0, 0, 100),
                chunk('b', 1, 100, 100),
                chunk('a', 2, 200, 100),
            ],
            Some(300),
        );
        let p = plan("i", &ok, None).unwrap();
        assert_eq!(
            (p.format, p.disk_size, p.parts.len()),
            (Format::Oci, 300, 3)
        );
        let groups = p.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].1, vec![0, 200]);
        assert_eq!(p.transfer_bytes(), 20);

        let err = |m: Manifest| plan("i", &m, None).unwrap_err().to_string();
        assert!(err(manifest(
            vec![chunk('a', 0, 0, 100), chunk('b', 1, 50, 100)],
            None
        ))
        .contains("overlap"));
        assert!(err(manifest(
            vec![chunk('a', 0, 0, 100), chunk('b', 1, 150, 100)],
            None
        ))
        .contains("gap"));
        assert!(err(manifest(vec![chunk('a', 0, 0, 100)], Some(50)))
            .contains("past the declared disk size"));
        assert!(err(manifest(vec![chunk('a', 0, 0, 100)], Some(500)))
            .contains("gap before the declared"));
        assert!(err(manifest(
            vec![chunk('a', 0, 0, 100), chunk('b', 0, 100, 100)],
            None
        ))
        .contains("twice"));
        assert!(err(manifest(
            vec![chunk('a', 0, 0, 100), chunk('a', 1, 100, 50)],
            None
        ))
        .contains("different"));
        assert!(err(manifest(vec![chunk('a', 0, 0, 1 << 50)], None)).contains("64 TiB"));
        let mut bad = chunk('a', 0, 0, 100);
        bad.digest = "sha256:../../etc".into();
        assert!(err(manifest(vec![bad], None)).contains("not a sha256 digest"));
        let mut nosize = chunk('a', 0, 0, 100);
        nosize.annotations.remove(media::UNCOMPRESSED_SIZE);
        assert!(err(manifest(vec![nosize], None)).contains("no uncompressed size"));
    }

    #[test]
    fn legacy_layers_are_concatenated_in_order() {
        let lz = |c: char, size: Option<u64>| Descriptor {
            annotations: size
                .map(|s| (media::LEGACY_UNCOMPRESSED_SIZE.to_string(), s.to_string()))
                .into_iter()
                .collect(),
            digest: d(c),
            media_type: media::LEGACY_DISK_LZ4.into(),
            size: 5,
        };
        let mut m = manifest(vec![lz('a', Some(10)), lz('b', Some(6))], None);
        m.config.media_type = media::LEGACY_CONFIG.into();
        m.layers.insert(
            0,
            Descriptor {
                annotations: BTreeMap::new(),
                digest: d('c'),
                media_type: media::LEGACY_CONFIG.into(),
                size: 10,
            },
        );
        m.layers.push(Descriptor {
            annotations: BTreeMap::new(),
            digest: d('e'),
            media_type: media::LEGACY_NVRAM.into(),
            size: 3,
        });
        let p = plan("i", &m, Some(32)).unwrap();
        assert_eq!(p.format, Format::Legacy);
        assert_eq!(p.disk_size, 32);
        assert!(p.offsets_known);
        assert_eq!(
            p.parts.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 10]
        );
        assert_eq!(p.nvram.unwrap().digest, d('e'));
        assert!(plan("i", &m, Some(12))
            .unwrap_err()
            .to_string()
            .contains("past the declared"));
        m.layers[1] = lz('a', None);
        let p = plan("i", &m, Some(32)).unwrap();
        assert!(!p.offsets_known);
    }

    fn state_part(c: char, offset: u64, size: u64, total: u64) -> Descriptor {
        layer(
            c,
            Attachment::State.media_type(),
            &[
                (attachment::PART_OFFSET, offset),
                (attachment::UNCOMPRESSED_SIZE, size),
                (attachment::TOTAL_SIZE, total),
            ],
        )
    }

    fn raw(c: char, kind: Attachment, size: u64) -> Descriptor {
        Descriptor {
            annotations: BTreeMap::new(),
            digest: d(c),
            media_type: kind.media_type().into(),
            size,
        }
    }

    #[test]
    fn cabins_attachments_after_lumes_layers_leave_the_disk_as_lume_reads_it() {
        let disk = vec![chunk('a', 0, 0, 100), chunk('b', 1, 100, 50)];
        let lume_only = plan("i", &manifest(disk.clone(), Some(150)), None).unwrap();
        let mut layers = disk.clone();
        layers.push(raw('e', Attachment::StateDescription, 300));
        layers.push(state_part('f', 64, 36, 100));
        layers.push(state_part('0', 0, 64, 100));
        // A later cabin's file: skipped, as Lume skips them all.
        layers.push(raw('1', Attachment::Kernel, 5));
        layers.push(Descriptor {
            media_type: "application/vnd.cabin.vm.future.v9".into(),
            ..raw('2', Attachment::Kernel, 5)
        });
        let p = plan("i", &manifest(layers.clone(), Some(150)), None).unwrap();
        assert_eq!(p.parts, lume_only.parts);
        assert_eq!(p.disk_size, 150);
        let kinds: Vec<Attachment> = p.attachments.iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [
                Attachment::StateDescription,
                Attachment::Kernel,
                Attachment::State
            ]
        );
        let state = &p.attachments[2];
        assert_eq!(state.size, 100);
        assert_eq!(
            state.parts.iter().map(|p| p.offset).collect::<Vec<_>>(),
            [0, 64]
        );
        assert_eq!(p.attachments[0].parts[0].codec, Codec::Raw);

        // Malformed attachments are left out, the disk's plan as Lume's.
        let err = |layers: Vec<Descriptor>| {
            let p = plan("i", &manifest(layers, Some(150)), None).unwrap();
            assert_eq!(p.parts, lume_only.parts);
            assert!(p.attachments.is_empty());
            p.attachments_refused.expect("refused")
        };
        let with = |extra: Vec<Descriptor>| {
            let mut l = disk.clone();
            l.extend(extra);
            l
        };
        // Parts that overlap, leave a gap, disagree on the total or lack an offset.
        assert!(err(with(vec![
            state_part('0', 0, 64, 100),
            state_part('f', 60, 40, 100)
        ]))
        .contains("suspended.state parts overlap"));
        assert!(err(with(vec![state_part('0', 0, 64, 100)])).contains("leaving a gap"));
        assert!(err(with(vec![
            state_part('0', 0, 64, 100),
            state_part('f', 64, 36, 99)
        ]))
        .contains("different total sizes"));
        let mut no_offset = state_part('0', 0, 100, 100);
        no_offset.annotations.remove(attachment::PART_OFFSET);
        assert!(err(with(vec![no_offset])).contains("has no org.cabin.part.offset"));
        // A description too large, or twice.
        assert!(
            err(with(vec![raw('e', Attachment::StateDescription, 2 << 20)]))
                .contains("larger than")
        );
        assert!(err(with(vec![
            raw('e', Attachment::StateDescription, 3),
            raw('f', Attachment::StateDescription, 3)
        ]))
        .contains("more than one suspended.json layer"));
        // A state larger than cabin takes.
        assert!(err(with(vec![state_part('0', 0, 1 << 41, 1 << 41)])).contains("more than"));
    }
}
