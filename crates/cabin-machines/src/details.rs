//! Lume's `VMDetails`: what `vm ls`, `vm get` and the HTTP API report about a VM, with
//! every key always present (null where there is no value). Built from files only, so
//! listing many VMs costs a few stats each and no subprocess. One key is cabin's own:
//! `startError`, why the last start failed (null once a start succeeds); clients that
//! know only Lume's keys ignore it.

use serde::Serialize;

use crate::store::{self, Vm};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskSize {
    pub allocated: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmDetails {
    pub name: String,
    pub os: String,
    pub cpu_count: u32,
    pub memory_size: u64,
    pub disk_size: DiskSize,
    pub display: String,
    pub status: store::VmStatus,
    pub provisioning_operation: Option<String>,
    pub vnc_url: Option<String>,
    pub ip_address: Option<String>,
    pub ssh_available: Option<bool>,
    pub location_name: String,
    pub shared_directories: Option<Vec<store::SharedDir>>,
    pub network_mode: String,
    pub download_progress: Option<f64>,
    pub start_error: Option<String>,
}

pub fn details(vm: &Vm) -> Result<VmDetails, store::VmError> {
    let c = vm.config()?;
    let (allocated, total) = store::disk_usage(&vm.disk());
    let session = vm.session();
    Ok(VmDetails {
        name: vm.name.clone(),
        os: c.os,
        cpu_count: c.cpu_count,
        memory_size: c.memory_size,
        disk_size: DiskSize { allocated, total },
        display: c.display,
        status: match session {
            Some(_) => store::VmStatus::Running,
            None => vm.status_at_rest(),
        },
        provisioning_operation: None,
        vnc_url: session.as_ref().and_then(|s| s.url.clone()),
        ip_address: session.as_ref().and_then(|s| s.ip_address.clone()),
        ssh_available: session.as_ref().map(|s| s.ssh_available),
        location_name: vm.location_name.clone(),
        // Lume's API always reports null here.
        shared_directories: None,
        network_mode: c.network_mode,
        download_progress: None,
        start_error: match session {
            Some(_) => None,
            None => vm.start_error().map(|e| e.message),
        },
    })
}

/// Pretty JSON the way Lume's CLI prints it (Swift's encoder: `"key" : value`).
pub fn lume_pretty<T: Serialize>(v: &T) -> String {
    struct Spaced<'a>(serde_json::ser::PrettyFormatter<'a>);
    impl serde_json::ser::Formatter for Spaced<'_> {
        fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            self.0.begin_array(w)
        }
        fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            self.0.end_array(w)
        }
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            self.0.begin_array_value(w, first)
        }
        fn end_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            self.0.end_array_value(w)
        }
        fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            self.0.begin_object(w)
        }
        fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            self.0.end_object(w)
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            self.0.begin_object_key(w, first)
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b" : ")
        }
        fn end_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            self.0.end_object_value(w)
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        Spaced(serde_json::ser::PrettyFormatter::with_indent(b"  ")),
    );
    v.serialize(&mut ser).expect("serialisable");
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_spaces_colons_like_lume() {
        let s = lume_pretty(&serde_json::json!([{"status": "running", "n": [1]}]));
        assert!(s.contains("\"status\" : \"running\""), "{s}");
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back[0]["n"][0], 1);
    }
}
