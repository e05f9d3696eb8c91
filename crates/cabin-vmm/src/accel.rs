//! Choosing the accelerator: KVM where this host can really run a guest with it, QEMU's
//! software emulator (TCG) otherwise.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the user asked for: `auto` (the default), `kvm` or `tcg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelRequest {
    #[default]
    Auto,
    Force(Accel),
}

impl fmt::Display for AccelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccelRequest::Auto => f.write_str("auto"),
            AccelRequest::Force(a) => a.fmt(f),
        }
    }
}

/// As the user writes it: `"auto"`, `"kvm"` or `"tcg"`.
impl serde::Serialize for AccelRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AccelRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for AccelRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(AccelRequest::Auto),
            "kvm" => Ok(AccelRequest::Force(Accel::Kvm)),
            "tcg" => Ok(AccelRequest::Force(Accel::Tcg)),
            other => Err(format!(
                "unknown accelerator {other:?}: use auto, kvm or tcg"
            )),
        }
    }
}

/// The facts the decision rests on, gathered by [`HostProbe::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// `Ok(api_version)` when /dev/kvm opened read-write and answered KVM_GET_API_VERSION.
    pub kvm_device: Result<i32, String>,
    /// The CPU advertises VMX (Intel) or SVM (AMD) in /proc/cpuinfo.
    pub hw_virt: bool,
    /// /dev/kvm is PVM, a nested hypervisor that only runs guests built for it.
    pub pvm: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
    /// The user chose it (flag or environment), so no notice is due.
    pub explicit: bool,
}

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_API_VERSION: i32 = 12;

/// Whether this host can run VMs, and with which accelerator, for `request` as the user
/// made it (a front end reads the flag or `CABIN_ACCEL`).
pub fn choose(request: AccelRequest) -> AccelChoice {
    decide(request, &HostProbe::read())
}

impl AccelChoice {
    /// The one-line notice owed to the user when cabin fell back to TCG on its own.
    pub fn tcg_notice(&self) -> Option<String> {
        (self.accel == Accel::Tcg && !self.explicit).then(|| {
            format!(
                "{}; using QEMU's software emulation (TCG), which is much slower (set CABIN_ACCEL=tcg to silence this)",
                self.reason
            )
        })
    }
}

impl HostProbe {
    pub fn read() -> HostProbe {
        HostProbe {
            kvm_device: probe_kvm_device(),
            hw_virt: cpu_has_hw_virt(),
            pvm: std::path::Path::new("/sys/module/kvm_pvm").exists(),
        }
    }
}

/// Whether the CPU advertises VMX or SVM. Read once per process (it cannot change) and
/// from the first CPU's record only: the kernel writes /proc/cpuinfo as it is read, a
/// record per CPU, and a whole one is hundreds of kilobytes on a large host, which one
/// `cabin run` would otherwise have made for each VM it considers.
fn cpu_has_hw_virt() -> bool {
    static HW_VIRT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HW_VIRT.get_or_init(|| {
        std::fs::File::open("/proc/cpuinfo")
            .map(|f| first_flags_have_hw_virt(std::io::BufReader::new(f)))
            .unwrap_or(false)
    })
}

/// The first `flags` line of a /proc/cpuinfo text names vmx or svm.
fn first_flags_have_hw_virt(cpuinfo: impl std::io::BufRead) -> bool {
    cpuinfo
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

fn probe_kvm_device() -> Result<i32, String> {
    use std::os::fd::AsRawFd;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and returns an int.
    let v = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v < 0 {
        return Err(format!(
            "/dev/kvm: KVM_GET_API_VERSION failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(v)
}

/// Decides from the probe and the request. Pure, so every branch is unit-tested.
pub fn decide(request: AccelRequest, probe: &HostProbe) -> AccelChoice {
    if let AccelRequest::Force(accel) = request {
        return AccelChoice {
            accel,
            reason: format!("{accel} was requested"),
            explicit: true,
        };
    }
    let tcg = |why: String| AccelChoice {
        accel: Accel::Tcg,
        reason: why,
        explicit: false,
    };
    match &probe.kvm_device {
        Err(e) => tcg(format!("KVM is not usable ({e})")),
        Ok(v) if *v != KVM_API_VERSION => tcg(format!(
            "KVM is not usable (/dev/kvm speaks API version {v}, not {KVM_API_VERSION})"
        )),
        Ok(_) if probe.pvm && !probe.hw_virt => tcg(
            "KVM is not usable (/dev/kvm is the PVM nested hypervisor, which cannot run a stock guest kernel)"
                .into(),
        ),
        Ok(_) if !probe.hw_virt => tcg(
            "KVM is not usable (the CPU advertises neither VMX nor SVM)".into(),
        ),
        Ok(_) => AccelChoice {
            accel: Accel::Kvm,
            reason: "/dev/kvm is usable and the CPU has hardware virtualisation".into(),
            explicit: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kvm: Result<i32, String>, hw_virt: bool, pvm: bool) -> HostProbe {
        HostProbe {
            kvm_device: kvm,
            hw_virt,
            pvm,
        }
    }

    #[test]
    fn kvm_needs_a_working_device_and_hardware_virtualisation() {
        let c = decide(AccelRequest::Auto, &probe(Ok(12), true, false));
        assert_eq!(c.accel, Accel::Kvm);
        assert!(!c.explicit);
    }

    #[test]
    fn pvm_device_is_not_usable() {
        let c = decide(AccelRequest::Auto, &probe(Ok(12), false, true));
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("PVM"), "{}", c.reason);
    }

    #[test]
    fn missing_device_or_cpu_support_means_tcg() {
        let c = decide(
            AccelRequest::Auto,
            &probe(
                Err("/dev/kvm: No such file or directory".into()),
                true,
                false,
            ),
        );
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("No such file"));
        let c = decide(AccelRequest::Auto, &probe(Ok(12), false, false));
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("VMX"));
        let c = decide(AccelRequest::Auto, &probe(Ok(11), true, false));
        assert_eq!(c.accel, Accel::Tcg);
    }

    #[test]
    fn a_request_overrides_the_probe() {
        let c = decide(AccelRequest::Force(Accel::Tcg), &probe(Ok(12), true, false));
        assert_eq!((c.accel, c.explicit), (Accel::Tcg, true));
        let c = decide(
            AccelRequest::Force(Accel::Kvm),
            &probe(Err("x".into()), false, true),
        );
        assert_eq!(c.accel, Accel::Kvm);
    }

    #[test]
    fn requests_parse() {
        assert_eq!("auto".parse(), Ok(AccelRequest::Auto));
        assert_eq!("KVM".parse(), Ok(AccelRequest::Force(Accel::Kvm)));
        assert_eq!("tcg".parse(), Ok(AccelRequest::Force(Accel::Tcg)));
        assert!("hvf".parse::<AccelRequest>().is_err());
    }

    #[test]
    fn hardware_virtualisation_is_read_from_the_first_cpus_flags() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n\nprocessor\t: 1\nflags\t\t: fpu\n";
        assert!(first_flags_have_hw_virt(vmx.as_bytes()));
        let svm = "processor\t: 0\nflags\t\t: fpu svm\n";
        assert!(first_flags_have_hw_virt(svm.as_bytes()));
        // a flag that merely contains the letters does not count
        let none = "processor\t: 0\nflags\t\t: fpu vmx_ept svmlock\n";
        assert!(!first_flags_have_hw_virt(none.as_bytes()));
        assert!(!first_flags_have_hw_virt("".as_bytes()));
    }
}
