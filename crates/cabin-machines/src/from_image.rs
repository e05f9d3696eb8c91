//! VMs made from OCI images (`vm create --image`): the image's root file system becomes
//! the VM's own disk, a self-contained bootable one: a GPT with an EFI system partition
//! (GRUB as `\EFI\BOOT\BOOTX64.EFI` and cabin's VM kernel) and a root partition
//! (journaled ext4) filling the rest. Under cabin the VM boots the kernel directly into
//! the image's own init (systemd, for a Debian image), with its identity and address on
//! the command line; the kernel is copied into the VM's directory, so the VM does not
//! change when cabin's kernel is rebuilt, and `cabin-boot.json` records how to boot it.
//! Copied elsewhere (pushed and pulled, where neither file travels), the disk boots
//! under UEFI on its own and takes its address by DHCP.
//!
//! What cabin adds to the image, so that the VM is usable at once:
//! - `/etc/fstab` mounting the root read-write after its check, growing it to the disk
//!   (`x-systemd.growfs`, so `vm set --disk-size` takes effect at the next boot);
//! - no `/etc/hostname`: the VM's name is on its kernel command line;
//! - `/etc/resolv.conf` pointing at `/proc/net/pnp`, where the kernel writes the name
//!   servers it was given with the VM's address on its command line; with systemd's
//!   networkd, at a file a small service writes from there or from the DHCP lease
//!   (which also names the host in a copy booted by its own loader);
//! - cabin's SSH key in `/root/.ssh/authorized_keys` (for `vm ssh`);
//! - Lume's conventional account, `lume` with the password `lume` (change it with
//!   `passwd` in the guest), allowed sudo, with cabin's key too, unless the image has a
//!   `lume` of its own: Lumier's scripts log in with it, as on Lume's images;
//! - a unit mounting the shared folders of each run at `/mnt/shared/<name>`.
//!
//! The image is hostile input: every addition is written without following the image's
//! symbolic links, so a link cannot point a write at the host.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use cabin_base::confined::{Leaf, Links, Root};
use serde::{Deserialize, Serialize};

use cabin_base::{Host, Paths};

use crate::store::{io_err, VmError};

/// How a VM made from an image boots (cabin's own file in the VM's directory).
pub use crate::store::BOOT;
/// The kernel it boots, copied into the VM's directory.
pub use crate::store::KERNEL;
/// The file-system label of its root.
pub const ROOT_LABEL: &str = "cabin-root";
/// Where the guest finds the run's shared folders.
pub const SHARES_DIR: &str = "/mnt/shared";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectBoot {
    /// The image the disk was made from, and its manifest digest.
    pub image: String,
    pub image_digest: String,
    /// The kernel's file name in the VM's directory.
    pub kernel: String,
    /// The root file system's device: the second partition of a self-contained disk,
    /// the whole disk for VMs made before disks had a partition table.
    #[serde(default = "whole_disk")]
    pub root: String,
}

fn whole_disk() -> String {
    "/dev/vda".into()
}

/// Where the root file system of a self-contained disk is, in the guest.
pub const ROOT_DEVICE: &str = "/dev/vda2";

/// The EFI system partition's label: the boot loader finds its kernel there, never on
/// the image's own root (which may have a `/vmlinuz` of its own).
const ESP_LABEL: &str = "CABIN-EFI";

/// The kernel command line the disk's own boot loader passes (a copy of the VM
/// somewhere cabin did not make it): no identity and no address, which the image's
/// own network set-up takes by DHCP.
const STANDALONE_COMMAND_LINE: &str =
    "root=/dev/vda2 rootfstype=ext4 ro console=tty0 console=ttyS0 net.ifnames=0";

/// systemd-networkd's DHCP on eth0, for boots without an address on the kernel command
/// line (a pulled copy); under cabin the kernel has configured eth0 already.
const DHCP_NETWORK: &str = "\
# cabin: the address by DHCP when the kernel was not given one (a copy of this VM
# booted by its own boot loader).
[Match]
Name=eth0
KernelCommandLine=!ip

[Network]
DHCP=ipv4
";

impl DirectBoot {
    pub fn read(vm_dir: &Path) -> Result<Option<DirectBoot>, VmError> {
        let p = vm_dir.join(BOOT);
        match fs::read(&p) {
            Ok(b) if b.len() <= 64 * 1024 => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| VmError::Failed(format!("{} is damaged: {e}", p.display()))),
            Ok(_) => Err(VmError::Failed(format!("{} is too large", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VmError::Failed(format!("reading {}: {e}", p.display()))),
        }
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<(), VmError> {
        fs::write(
            dir.join(BOOT),
            serde_json::to_vec_pretty(self).expect("serialisable"),
        )
        .map_err(io_err(format!("writing {BOOT}")))
    }
}

/// The guest's address set-up, for the kernel's `ip=` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestAddress {
    pub address: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    pub dns: Vec<String>,
}

/// The kernel command line of a VM made from an image; without an address, the kernel
/// asks the network's DHCP server for one.
pub fn kernel_command_line(
    root: &str,
    hostname: &str,
    machine_id: Option<&str>,
    net: Option<&GuestAddress>,
    share_tags: &[(String, bool)],
) -> String {
    let ip = match net {
        Some(net) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.prefix))
                .unwrap_or(0);
            let mask = std::net::Ipv4Addr::from(mask);
            let dns: Vec<&str> = net.dns.iter().map(String::as_str).take(2).collect();
            format!(
                "ip={}::{}:{mask}:{hostname}:eth0:off:{}",
                net.address,
                net.gateway,
                dns.join(":")
            )
        }
        None => format!("ip=::::{hostname}:eth0:dhcp"),
    };
    let mut args = vec![
        format!("root={root}"),
        "rootfstype=ext4".into(),
        "ro".into(),
        // The last console is /dev/console: systemd's messages and a login prompt go to
        // the serial log (`vm logs`); the screen gets a console too.
        "console=tty0".into(),
        "console=ttyS0".into(),
        // The kernel configures eth0 before init runs; a renamed card would lose that.
        "net.ifnames=0".into(),
        ip,
        // The VM's name, not one baked into the disk: a clone gets its own.
        format!("systemd.hostname={hostname}"),
    ];
    if let Some(id) = machine_id {
        args.push(format!("systemd.machine_id={id}"));
    }
    for (tag, ro) in share_tags {
        args.push(format!("cabin.share={tag}{}", if *ro { ":ro" } else { "" }));
    }
    args.join(" ")
}

/// The machine id systemd gets (32 hex digits) for Lume's base64 machine identifier.
pub fn systemd_machine_id(identifier: &str) -> Option<String> {
    crate::store::machine_uuid(identifier).map(|u| u.replace('-', ""))
}

pub use crate::Notify;

/// Creates the VM `name` from the image `reference` (`vm create --image`).
pub fn create(
    settings: &crate::settings::Settings,
    host: &Host,
    name: &str,
    storage: Option<&str>,
    opts: &crate::store::CreateOptions,
    reference: &str,
    notify: Notify<'_>,
) -> Result<crate::store::Vm, VmError> {
    crate::store::create_with(settings, name, storage, opts, |stage| {
        provision(host, stage, reference, opts.disk_size, notify)
    })
}

/// Fills the staging directory of a new VM: `disk.img` of `disk_size` bytes holding the
/// image `reference` (from cabin's image store) with cabin's additions, the kernel, and
/// `cabin-boot.json`.
pub fn provision(
    host: &Host,
    stage: &Path,
    reference: &str,
    disk_size: u64,
    notify: Notify<'_>,
) -> Result<(), VmError> {
    use cabin_image::{image, store::Store};
    let paths = &host.paths;
    let kernel =
        crate::kernel::locate_or_build(host, notify).map_err(|e| VmError::Failed(e.to_string()))?;
    let store = Store::open(paths.image_store()).map_err(|e| VmError::Failed(e.to_string()))?;
    let img = image::resolve(&store, reference).map_err(|e| {
        VmError::Invalid(match e {
            image::ImageError::NotFound(_) => format!(
                "image not found: {reference}: pull it (cabin pull {reference}) or import a root file system (cabin image import DIR {reference})"
            ),
            e => e.to_string(),
        })
    })?;
    let root = stage.join(".rootfs");
    fs::create_dir(&root)
        .map_err(|e| VmError::Failed(format!("creating {}: {e}", root.display())))?;
    let result = (|| {
        let budget = cabin_image::layer::Limits::default().max_bytes;
        image::unpack(&store, &img, &root, budget).map_err(|e| {
            with_space_hint(format!("unpacking {reference} onto the VM's disk: {e}"))
        })?;
        if !has_init(&root) {
            return Err(VmError::Invalid(format!(
                "{reference} has no init (/sbin/init): a VM boots its image's own init; use a system image, e.g. Debian with systemd-sysv"
            )));
        }
        add_cabin_files(paths, &root, notify)
            .map_err(|e| with_space_hint(format!("adding cabin's files to the VM's disk: {e}")))?;
        let esp = build_esp(&kernel, stage)?;
        let built = cabin_image::rootfs::build_system_disk(
            &root,
            &stage.join(crate::store::DISK),
            disk_size,
            ROOT_LABEL,
            &esp,
        )
        .map_err(|e| with_space_hint(e.to_string()));
        let _ = fs::remove_file(&esp);
        built
    })();
    let _ = fs::remove_dir_all(&root);
    result?;
    fs::copy(&kernel, stage.join(KERNEL))
        .map_err(|e| with_space_hint(format!("copying the kernel {}: {e}", kernel.display())))?;
    DirectBoot {
        image: if img.reference.is_empty() {
            reference.to_string()
        } else {
            img.reference.clone()
        },
        image_digest: img.manifest_digest.clone(),
        kernel: KERNEL.into(),
        root: ROOT_DEVICE.into(),
    }
    .write(stage)
}

/// Runs one of the boot-disk tools (GRUB's, mtools).
fn tool(program: &str, args: &[&std::ffi::OsStr], package: &str) -> Result<(), VmError> {
    let o = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            VmError::Failed(format!(
                "{program} is missing: a VM made from an image gets a bootable disk; install it with: apt-get install {package}"
            ))
        } else {
            VmError::Failed(format!("{program}: {e}"))
        }
    })?;
    if !o.status.success() {
        return Err(VmError::Failed(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// The EFI system partition's image, in `stage`: FAT holding GRUB as the removable-media
/// boot loader (its configuration built in) and the kernel.
fn build_esp(kernel: &Path, stage: &Path) -> Result<PathBuf, VmError> {
    let cfg = stage.join(".grub.cfg");
    let efi = stage.join(".BOOTX64.EFI");
    let esp = stage.join(".esp.img");
    let io = |what: &'static str| move |e: io::Error| VmError::Failed(format!("{what}: {e}"));
    fs::write(
        &cfg,
        format!(
            "set timeout=0\nsearch --no-floppy --label --set=root {ESP_LABEL}\nlinux /vmlinuz {STANDALONE_COMMAND_LINE}\nboot\n"
        ),
    )
    .map_err(io("writing the boot loader's configuration"))?;
    let os = |s: &Path| s.as_os_str().to_owned();
    let grub_cfg = format!("boot/grub/grub.cfg={}", cfg.display());
    let result = (|| {
        tool(
            "grub-mkstandalone",
            &[
                "-O".as_ref(),
                "x86_64-efi".as_ref(),
                "-o".as_ref(),
                os(&efi).as_os_str(),
                "--modules=part_gpt fat ext2 linux search normal configfile".as_ref(),
                "--locales=".as_ref(),
                "--fonts=".as_ref(),
                "--themes=".as_ref(),
                grub_cfg.as_ref(),
            ],
            "grub-efi-amd64-bin grub-common",
        )?;
        fs::File::create(&esp)
            .and_then(|f| f.set_len(cabin_image::gpt::ESP_SECTORS * cabin_image::gpt::SECTOR))
            .map_err(io("making the EFI system partition"))?;
        let image = os(&esp);
        let i = image.as_os_str();
        tool(
            "mformat",
            &[
                "-i".as_ref(),
                i,
                "-F".as_ref(),
                "-v".as_ref(),
                ESP_LABEL.as_ref(),
                "::".as_ref(),
            ],
            "mtools",
        )?;
        tool(
            "mmd",
            &["-i".as_ref(), i, "::/EFI".as_ref(), "::/EFI/BOOT".as_ref()],
            "mtools",
        )?;
        tool(
            "mcopy",
            &[
                "-i".as_ref(),
                i,
                os(&efi).as_os_str(),
                "::/EFI/BOOT/BOOTX64.EFI".as_ref(),
            ],
            "mtools",
        )?;
        tool(
            "mcopy",
            &[
                "-i".as_ref(),
                i,
                os(kernel).as_os_str(),
                "::/vmlinuz".as_ref(),
            ],
            "mtools",
        )?;
        Ok(())
    })();
    let _ = fs::remove_file(&cfg);
    let _ = fs::remove_file(&efi);
    match result {
        Ok(()) => Ok(esp),
        Err(e) => {
            let _ = fs::remove_file(&esp);
            Err(e)
        }
    }
}

/// A failure to make the disk, with what to do when the storage location is full.
fn with_space_hint(message: String) -> VmError {
    if message.contains("No space left on device") || message.contains("not enough free space") {
        VmError::Failed(format!("{message}{}", crate::store::NO_SPACE_HINT))
    } else {
        VmError::Failed(message)
    }
}

fn has_init(root: &Path) -> bool {
    [
        "sbin/init",
        "usr/sbin/init",
        "lib/systemd/systemd",
        "usr/lib/systemd/systemd",
    ]
    .iter()
    .any(|p| {
        // The path's last component may be a link (to /lib/systemd/systemd).
        fs::symlink_metadata(root.join(p)).is_ok()
    })
}

const MOUNT_SHARES: &str = r#"#!/bin/sh
# Mounts the folders cabin shares with this VM: each virtio-9p device's tag NAME at
# /mnt/shared/NAME. Read-only where the kernel command line says cabin.share=NAME:ro
# (a VM booted by its own loader has no such word; QEMU refuses writes to a read-only
# share all the same).
ro=" "
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cabin.share=*:ro) spec=${arg#cabin.share=}; ro="$ro${spec%:ro} " ;;
  esac
done
for f in /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag; do
  [ -r "$f" ] || continue
  tag=$(tr -d '\000' < "$f")
  case "$tag" in ""|.|..|*/*) continue ;; esac
  opts=trans=virtio,version=9p2000.L,msize=262144,cache=none
  case "$ro" in *" $tag "*) opts=$opts,ro ;; esac
  mkdir -p "/mnt/shared/$tag" && mount -t 9p -o "$opts" "$tag" "/mnt/shared/$tag"
done
exit 0
"#;

const MOUNT_SHARES_UNIT: &str = "[Unit]
Description=Mount the folders cabin shares with this VM
After=local-fs.target
Before=multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/cabin/mount-shares

[Install]
WantedBy=multi-user.target
";

const NETWORK_IDENTITY: &str = r#"#!/bin/sh
# Writes /run/cabin/resolv.conf, where /etc/resolv.conf points: the name servers this
# boot was given, by cabin on the kernel command line (the kernel lists them in
# /proc/net/pnp, and the host name is on the command line too) or by DHCP
# (systemd-networkd's lease, whose host name is set here: networkd may not set it
# itself without polkit), whichever comes first.
mkdir -p /run/cabin
put() { cat > /run/cabin/resolv.conf.new && mv /run/cabin/resolv.conf.new /run/cabin/resolv.conf; }
i=0
while [ $i -lt 240 ]; do
  if grep -q '^nameserver' /proc/net/pnp 2>/dev/null; then
    grep '^nameserver' /proc/net/pnp | put
    exit 0
  fi
  for lease in /run/systemd/netif/leases/*; do
    [ -f "$lease" ] || continue
    servers=$(sed -n 's/^DNS=//p' "$lease")
    name=$(sed -n 's/^HOSTNAME=//p' "$lease")
    [ -n "$servers$name" ] || continue
    [ -z "$servers" ] || for s in $servers; do echo "nameserver $s"; done | put
    case "$name" in
      ""|-*|*[!A-Za-z0-9.-]*) ;;
      *) [ -s /etc/hostname ] || echo "$name" > /proc/sys/kernel/hostname ;;
    esac
    exit 0
  done
  sleep 0.5
  i=$((i + 1))
done
echo "cabin: no name servers from the kernel command line or DHCP in 2 minutes" >&2
exit 0
"#;

const NETWORK_IDENTITY_UNIT: &str = "[Unit]
Description=Name servers and host name from cabin or DHCP
DefaultDependencies=no
After=local-fs.target

[Service]
Type=simple
ExecStart=/usr/local/lib/cabin/network-identity

[Install]
WantedBy=multi-user.target
";

fn add_cabin_files(paths: &Paths, root: &Path, notify: Notify<'_>) -> io::Result<()> {
    // The image is the user's, not cabin's: its links are never followed, so a link
    // where cabin writes is replaced and one on the way is an error.
    let tree = Root::open(root, Links::Refuse)?;
    let not_a_dir = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotADirectory {
            // "/etc is not a directory" names the image's own path.
            let what = e.to_string();
            io::Error::new(
                e.kind(),
                format!("the image's {}", what.trim_start_matches('/')),
            )
        } else {
            e
        }
    };
    let add = || -> io::Result<()> {
        tree.replace_file(
            Path::new("etc/fstab"),
            format!("LABEL={ROOT_LABEL} / ext4 defaults,x-systemd.growfs 0 1\n").as_bytes(),
            0o644,
        )?;
        // The host name comes from the kernel command line (the VM's name, which a
        // clone changes); debootstrap leaves the building host's name here.
        tree.remove(Path::new("etc/hostname"))?;
        tree.replace_with_symlink(Path::new("etc/resolv.conf"), "/proc/net/pnp")?;
        let key = ssh_public_key(paths, notify)?;
        if let Some(key) = &key {
            tree.make_path(Path::new("root/.ssh"), Leaf::Dir, 0o700)?;
            tree.replace_file(
                Path::new("root/.ssh/authorized_keys"),
                key.as_bytes(),
                0o600,
            )?;
        }
        add_lume_account(&tree, key.as_deref())?;
        tree.replace_file(
            Path::new("usr/local/lib/cabin/mount-shares"),
            MOUNT_SHARES.as_bytes(),
            0o755,
        )?;
        if tree
            .open_in(Path::new("etc/systemd/system"), libc::O_PATH)
            .is_ok()
        {
            tree.replace_file(
                Path::new("etc/systemd/system/cabin-shares.service"),
                MOUNT_SHARES_UNIT.as_bytes(),
                0o644,
            )?;
            tree.replace_with_symlink(
                Path::new("etc/systemd/system/multi-user.target.wants/cabin-shares.service"),
                "/etc/systemd/system/cabin-shares.service",
            )?;
            // A copy booted elsewhere takes its address by DHCP (systemd-networkd,
            // when the image has it).
            let networkd = ["lib", "usr/lib"].iter().find(|l| {
                tree.open_in(
                    &Path::new(l).join("systemd/system/systemd-networkd.service"),
                    libc::O_PATH,
                )
                .is_ok()
            });
            if let Some(lib) = networkd {
                // networkd does not write resolv.conf itself (systemd-resolved would):
                // a small service takes the name servers, and the host name, from
                // either source.
                tree.replace_file(
                    Path::new("usr/local/lib/cabin/network-identity"),
                    NETWORK_IDENTITY.as_bytes(),
                    0o755,
                )?;
                tree.replace_file(
                    Path::new("etc/systemd/system/cabin-network-identity.service"),
                    NETWORK_IDENTITY_UNIT.as_bytes(),
                    0o644,
                )?;
                tree.replace_with_symlink(
                    Path::new(
                        "etc/systemd/system/multi-user.target.wants/cabin-network-identity.service",
                    ),
                    "/etc/systemd/system/cabin-network-identity.service",
                )?;
                tree.replace_with_symlink(Path::new("etc/resolv.conf"), "/run/cabin/resolv.conf")?;
                tree.make_path(Path::new("etc/systemd/network"), Leaf::Dir, 0o755)?;
                tree.replace_file(
                    Path::new("etc/systemd/network/80-cabin-dhcp.network"),
                    DHCP_NETWORK.as_bytes(),
                    0o644,
                )?;
                for (link, unit) in [
                    ("multi-user.target.wants", "systemd-networkd.service"),
                    ("sockets.target.wants", "systemd-networkd.socket"),
                ] {
                    tree.replace_with_symlink(
                        &Path::new("etc/systemd/system").join(link).join(unit),
                        &format!("/{lib}/systemd/system/{unit}"),
                    )?;
                }
            }
        }
        Ok(())
    };
    add().map_err(not_a_dir)
}

/// The password `lume`, as crypt(3) SHA-512 (a fixed salt: the password is public).
const LUME_PASSWORD_HASH: &str =
    "$6$cabinlumeacct$jGsd6fLjIuAj69PlqHoCPxspRmWQ0dOL73ArJg6dawKHavN.eF5ynbeYij0ejxjjqgocR.3NX9mLlR8q63aWe1";

/// The largest account file of an image that cabin edits.
const ACCOUNTS_LIMIT: u64 = 1 << 20;

/// Adds Lume's `lume` account (see the module's doc) to an image that has
/// `/etc/passwd` and no `lume` yet.
fn add_lume_account(tree: &Root, key: Option<&str>) -> io::Result<()> {
    let text = |p: &str| match tree.read_text(Path::new(p), ACCOUNTS_LIMIT) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    let Some(passwd) = text("etc/passwd")? else {
        return Ok(());
    };
    if passwd.lines().any(|l| l.starts_with("lume:")) {
        return Ok(());
    }
    let group = text("etc/group")?.unwrap_or_default();
    let taken: std::collections::HashSet<u32> = passwd
        .lines()
        .chain(group.lines())
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let id = (1000..60000).find(|i| !taken.contains(i)).unwrap_or(1000);
    let shell = if tree.open_in(Path::new("bin/bash"), libc::O_PATH).is_ok() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let shadow = text("etc/shadow")?;
    let field = if shadow.is_some() {
        "x"
    } else {
        LUME_PASSWORD_HASH
    };
    let line = |text: &str, add: &str| {
        let mut t = text.to_string();
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t.push_str(add);
        t
    };
    tree.replace_file(
        Path::new("etc/passwd"),
        line(
            &passwd,
            &format!("lume:{field}:{id}:{id}:Lume:/home/lume:{shell}\n"),
        )
        .as_bytes(),
        0o644,
    )?;
    // Its own group, and the administrators' (Debian's sudo, others' wheel).
    let mut groups: Vec<String> = group
        .lines()
        .map(|l| {
            let admin = l.starts_with("sudo:") || l.starts_with("wheel:");
            match (admin, l.split(':').nth(3)) {
                (true, Some("")) => format!("{l}lume"),
                (true, Some(_)) => format!("{l},lume"),
                _ => l.to_string(),
            }
        })
        .collect();
    if !group.lines().any(|l| l.starts_with("lume:")) {
        groups.push(format!("lume:x:{id}:"));
    }
    tree.replace_file(
        Path::new("etc/group"),
        format!("{}\n", groups.join("\n")).as_bytes(),
        0o644,
    )?;
    if let Some(shadow) = shadow {
        tree.replace_file(
            Path::new("etc/shadow"),
            line(
                &shadow,
                &format!("lume:{LUME_PASSWORD_HASH}:19000:0:99999:7:::\n"),
            )
            .as_bytes(),
            0o640,
        )?;
    }
    if tree
        .open_in(Path::new("etc/sudoers.d"), libc::O_PATH | libc::O_DIRECTORY)
        .is_ok()
    {
        tree.replace_file(
            Path::new("etc/sudoers.d/lume"),
            b"lume ALL=(ALL:ALL) ALL\n",
            0o440,
        )?;
    }
    tree.make_path(Path::new("home/lume"), Leaf::Dir, 0o755)?;
    tree.chown(Path::new("home/lume"), id, id)?;
    if let Some(key) = key {
        tree.make_path(Path::new("home/lume/.ssh"), Leaf::Dir, 0o700)?;
        tree.replace_file(
            Path::new("home/lume/.ssh/authorized_keys"),
            key.as_bytes(),
            0o600,
        )?;
        tree.chown(Path::new("home/lume/.ssh"), id, id)?;
        tree.chown(Path::new("home/lume/.ssh/authorized_keys"), id, id)?;
    }
    Ok(())
}

/// cabin's SSH key pair for VMs made from images, made on first use with ssh-keygen.
pub fn ssh_key(paths: &Paths) -> PathBuf {
    paths.ssh_key()
}

/// The public half of cabin's SSH key, made if missing; None without ssh-keygen.
fn ssh_public_key(paths: &Paths, notify: Notify<'_>) -> io::Result<Option<String>> {
    let key = ssh_key(paths);
    let public = key.with_extension("pub");
    if !public.is_file() {
        let dir = key.parent().expect("a parent");
        cabin_base::files::create_private_dir(dir)?;
        let _ = fs::remove_file(&key);
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "cabin", "-f"])
            .arg(&key)
            .output();
        match made {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notify("ssh-keygen is missing (apt-get install openssh-client): the VM gets no SSH key, so `cabin vm ssh` cannot log in");
                return Ok(None);
            }
            Err(e) => return Err(e),
            Ok(o) if !o.status.success() => {
                return Err(io::Error::other(format!(
                    "ssh-keygen: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )))
            }
            Ok(_) => {}
        }
    }
    fs::read_to_string(&public).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_carries_address_identity_and_shares() {
        let net = GuestAddress {
            address: "10.89.0.7".parse().unwrap(),
            prefix: 24,
            gateway: "10.89.0.1".parse().unwrap(),
            dns: vec!["192.0.2.53".into()],
        };
        let line = kernel_command_line(
            ROOT_DEVICE,
            "web",
            Some("0123456789abcdef0123456789abcdef"),
            Some(&net),
            &[("code".into(), false), ("data".into(), true)],
        );
        assert!(
            line.starts_with("root=/dev/vda2 rootfstype=ext4 ro "),
            "{line}"
        );
        assert!(
            line.contains(" ip=10.89.0.7::10.89.0.1:255.255.255.0:web:eth0:off:192.0.2.53 "),
            "{line}"
        );
        assert!(line.contains("systemd.machine_id=0123456789abcdef0123456789abcdef"));
        assert!(
            line.ends_with("cabin.share=code cabin.share=data:ro"),
            "{line}"
        );
    }

    #[test]
    fn images_get_lumes_account_unless_they_have_one() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("etc/sudoers.d")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/bash"), "").unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nsudo:x:27:\nuser:x:1000:\n").unwrap();
        std::fs::write(r.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        let tree = Root::open(r, Links::Refuse).unwrap();
        add_lume_account(&tree, Some("ssh-ed25519 AAAA cabin\n")).unwrap();
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert!(read("etc/passwd").ends_with("\nlume:x:1001:1001:Lume:/home/lume:/bin/bash\n"));
        assert!(read("etc/group").contains("sudo:x:27:lume\n"));
        assert!(read("etc/group").ends_with("lume:x:1001:\n"));
        assert!(read("etc/shadow").contains(&format!("lume:{LUME_PASSWORD_HASH}:")));
        assert_eq!(read("etc/sudoers.d/lume"), "lume ALL=(ALL:ALL) ALL\n");
        assert_eq!(
            read("home/lume/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA cabin\n"
        );
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(std::fs::metadata(r.join("home/lume")).unwrap().uid(), 1001);
        }
        // A second time (or an image with its own lume): nothing changes.
        let before = read("etc/passwd");
        add_lume_account(&tree, None).unwrap();
        assert_eq!(read("etc/passwd"), before);
    }

    #[test]
    fn additions_never_follow_the_images_links() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("usr")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let paths = Paths::at(t.path().join("data"));
        // A hostile image: /etc leads out of the tree.
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        let e = add_cabin_files(&paths, &root, &|_| {}).unwrap_err();
        assert!(e.to_string().contains("etc is not a directory"), "{e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        fs::remove_file(root.join("etc")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        // A link in a file's own place is replaced, not written through.
        std::os::unix::fs::symlink(outside.join("victim"), root.join("etc/fstab")).unwrap();
        add_cabin_files(&paths, &root, &|_| {}).unwrap();
        assert!(!outside.join("victim").exists());
        assert!(fs::read_to_string(root.join("etc/fstab"))
            .unwrap()
            .contains("x-systemd.growfs"));
        let tree = Root::open(&root, Links::Refuse).unwrap();
        assert!(tree.make_path(Path::new("../x"), Leaf::Dir, 0o755).is_err());
    }

    #[test]
    fn machine_ids_follow_the_identifier() {
        let id = crate::store::random_machine_id().unwrap();
        let hex = systemd_machine_id(&id).unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
