//! The partition table of a self-contained VM disk: a GPT with an EFI system partition
//! (the boot loader and the kernel) and a root partition (the image's file system)
//! that fills the rest of the disk, so that UEFI firmware boots the disk on its own,
//! wherever it is copied, pushed or pulled. The root partition is the last one, so a
//! larger disk only moves the backup table and extends it (`grow`).

use std::fs::File;
use std::io;

use gptman::{GPTPartitionEntry, GPT};

/// Bytes per sector (QEMU's virtio-blk default).
pub const SECTOR: u64 = 512;
/// The EFI system partition: 1 MiB in, 64 MiB long.
pub const ESP_FIRST: u64 = 2048;
pub const ESP_SECTORS: u64 = (64 << 20) / SECTOR;
/// The root partition starts right after it.
pub const ROOT_FIRST: u64 = ESP_FIRST + ESP_SECTORS;
/// The smallest disk worth the name: the table, the ESP and 64 MiB of root.
pub const MIN_BYTES: u64 = (ROOT_FIRST + (64 << 20) / SECTOR + 34) * SECTOR;

/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, in the table's byte order.
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];
/// 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux file system), in the table's byte order.
const LINUX_TYPE: [u8; 16] = [
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4,
];

fn gpt_error(e: gptman::Error) -> io::Error {
    match e {
        gptman::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// A random GUID (version 4), in the table's byte order.
fn guid() -> io::Result<[u8; 16]> {
    let mut g = cabin_base::random::bytes::<16>()?;
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    Ok(g)
}

/// Where the root partition lies: its offset and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub offset: u64,
    pub bytes: u64,
}

/// Writes the table (protective MBR, primary and backup GPT) on `disk`, which already
/// has its final size; where the root partition lies.
pub fn create(disk: &mut File) -> io::Result<Root> {
    let len = disk.metadata()?.len();
    if len < MIN_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a bootable disk needs at least {} MiB", MIN_BYTES >> 20),
        ));
    }
    let mut gpt = GPT::new_from(disk, SECTOR, guid()?).map_err(gpt_error)?;
    gpt[1] = GPTPartitionEntry {
        partition_type_guid: ESP_TYPE,
        unique_partition_guid: guid()?,
        starting_lba: ESP_FIRST,
        ending_lba: ESP_FIRST + ESP_SECTORS - 1,
        attribute_bits: 0,
        partition_name: "EFI system".into(),
    };
    gpt[2] = GPTPartitionEntry {
        partition_type_guid: LINUX_TYPE,
        unique_partition_guid: guid()?,
        starting_lba: ROOT_FIRST,
        ending_lba: gpt.header.last_usable_lba,
        attribute_bits: 0,
        partition_name: "root".into(),
    };
    GPT::write_protective_mbr_into(disk, SECTOR).map_err(gpt_error)?;
    gpt.write_into(disk).map_err(gpt_error)?;
    root_of(&gpt)
}

fn root_of(gpt: &GPT) -> io::Result<Root> {
    let p = &gpt[2];
    let not_ours = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the disk's second partition is not cabin's root partition",
        )
    };
    if !p.is_used() || p.partition_type_guid != LINUX_TYPE || p.starting_lba != ROOT_FIRST {
        return Err(not_ours());
    }
    let sectors = p
        .ending_lba
        .checked_sub(p.starting_lba)
        .ok_or_else(not_ours)?
        + 1;
    Ok(Root {
        offset: p.starting_lba * gpt.sector_size,
        bytes: sectors * gpt.sector_size,
    })
}

/// Reads the table, if the disk has one of cabin's shape: a header at LBA 1 that
/// announces 128 entries of 128 bytes. Anything else (no table, or a header from a
/// hostile image asking for billions of entries) is None before the library reads it.
fn read_table(disk: &mut File) -> io::Result<Option<GPT>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut header = [0u8; 92];
    disk.seek(SeekFrom::Start(SECTOR))?;
    if let Err(e) = disk.read_exact(&mut header) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(e),
        };
    }
    let entries = u32::from_le_bytes(header[80..84].try_into().expect("4 bytes"));
    let size = u32::from_le_bytes(header[84..88].try_into().expect("4 bytes"));
    if &header[..8] != b"EFI PART" || entries != 128 || size != 128 {
        return Ok(None);
    }
    disk.seek(SeekFrom::Start(0))?;
    match GPT::find_from(disk) {
        Ok(gpt) => Ok(Some(gpt)),
        Err(gptman::Error::Io(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// The root partition of a disk cabin laid out; None for a disk without a GPT (a file
/// system on the whole disk, as VMs made by older cabins have).
pub fn root(disk: &mut File) -> io::Result<Option<Root>> {
    match read_table(disk)? {
        Some(gpt) => root_of(&gpt).map(Some),
        None => Ok(None),
    }
}

/// After `disk` was made larger: moves the backup table to the new end and extends the
/// root partition to fill the disk (its file system grows at the guest's next boot).
/// False, and nothing touched, for a disk cabin did not lay out (the guest's own
/// tools grow those).
pub fn grow(disk: &mut File) -> io::Result<bool> {
    let Some(mut gpt) = read_table(disk)? else {
        return Ok(false);
    };
    if root_of(&gpt).is_err() || gpt.iter().any(|(i, p)| i > 2 && p.is_used()) {
        return Ok(false);
    }
    gpt.header.update_from(disk, SECTOR).map_err(gpt_error)?;
    gpt[2].ending_lba = gpt.header.last_usable_lba;
    gpt.write_into(disk).map_err(gpt_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty disk file in `dir`, open for reading and writing.
    fn new_disk(dir: &std::path::Path) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("disk.img"))
            .unwrap()
    }

    #[test]
    fn a_disk_gets_an_esp_and_a_root_that_grows_with_it() {
        let t = tempfile::tempdir().unwrap();
        let mut f = new_disk(t.path());
        f.set_len(1 << 30).unwrap();
        let r = create(&mut f).unwrap();
        assert_eq!(r.offset, 65 << 20);
        // The backup table takes the last 33 sectors.
        assert_eq!(r.offset + r.bytes, (1 << 30) - 33 * SECTOR);
        assert_eq!(root(&mut f).unwrap(), Some(r));
        let gpt = GPT::find_from(&mut f).unwrap();
        assert_eq!(gpt[1].partition_type_guid, ESP_TYPE);
        assert_eq!(gpt[1].starting_lba, ESP_FIRST);

        f.set_len(2 << 30).unwrap();
        assert!(grow(&mut f).unwrap());
        let grown = root(&mut f).unwrap().unwrap();
        assert_eq!(grown.offset, r.offset);
        assert_eq!(grown.offset + grown.bytes, (2 << 30) - 33 * SECTOR);
        // The backup header sits in the new last sector.
        let gpt = GPT::find_from(&mut f).unwrap();
        assert_eq!(gpt.header.backup_lba, (2 << 30) / SECTOR - 1);
    }

    #[test]
    fn a_whole_disk_file_system_has_no_table_and_small_disks_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut f = new_disk(t.path());
        f.set_len(256 << 20).unwrap();
        assert_eq!(root(&mut f).unwrap(), None);
        assert!(!grow(&mut f).unwrap());
        f.set_len(8 << 20).unwrap();
        assert!(create(&mut f).is_err());
    }

    #[test]
    fn a_header_asking_for_billions_of_entries_is_not_read() {
        let t = tempfile::tempdir().unwrap();
        let mut f = new_disk(t.path());
        f.set_len(1 << 30).unwrap();
        create(&mut f).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&u32::MAX.to_le_bytes(), SECTOR + 80)
            .unwrap();
        assert_eq!(root(&mut f).unwrap(), None);
        f.set_len(2 << 30).unwrap();
        assert!(!grow(&mut f).unwrap(), "left alone");
    }
}
