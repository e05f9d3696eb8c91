//! Kubernetes' container runtime interface with cabin's runtime handler, without a
//! kubelet: Debian's containerd with its CRI plugin on a private socket, a `cabin`
//! runtime handler in its configuration, and a CRI client (the `k8s-cri` crate's)
//! making the calls a kubelet makes for a pod: RunPodSandbox, CreateContainer and
//! StartContainer of three containers, ContainerStatus, ExecSync, ContainerStats,
//! StopPodSandbox, RemovePodSandbox. The pod is one real VM: its containers run in
//! the sandbox's VM and reach each other on localhost; when that VM dies, they end.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

const SANDBOX_IMAGE: &str = "docker.io/library/pause:demo";
const IMAGE: &str = "docker.io/library/busybox:demo";

/// containerd's configuration: CRI with the `cabin` handler, CNI's plugins from
/// Debian's containernetworking-plugins and its configuration in `cni`.
fn config(cni: &Path) -> String {
    std::fs::create_dir_all(cni).unwrap();
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cabin]
    runtime_type = "io.containerd.cabin.v2"
"#,
        cni = cni.display()
    )
}

async fn client(socket: &Path) -> RuntimeServiceClient<Channel> {
    let socket = socket.to_path_buf();
    let channel = Endpoint::from_static("http://cri")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("containerd's CRI socket answers");
    RuntimeServiceClient::new(channel)
}

fn container(name: &str, command: &[&str], log: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: log.into(),
        ..Default::default()
    }
}

/// Stops and removes pod `pod`, as a kubelet ends one.
async fn end_pod(cri: &mut RuntimeServiceClient<Channel>, pod: &str) {
    cri.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    cri.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
}

/// Waits for container `id` to be reported as exited.
async fn exited(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = cri
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not end: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The images a kubelet would have pulled, in CRI's namespace: busybox, and a sandbox
/// image whose process waits.
fn import_images(c: &Containerd) {
    let pause = c.dir.join("pause.tar");
    let o = cabin_in(&c.data)
        .args(["image", "import"])
        .arg(busybox_rootfs())
        .args(["pause:demo", "--cmd", "sleep", "--cmd", "100000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_in(&c.data)
        .args(["image", "save", "pause:demo", "-o"])
        .arg(&pause)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for (archive, name, full) in [
        (c.dir.join("busybox.tar"), "busybox:demo", IMAGE),
        (pause, "pause:demo", SANDBOX_IMAGE),
    ] {
        c.ctr_ok(&["-n", "k8s.io", "image", "import", archive.to_str().unwrap()]);
        c.ctr_ok(&["-n", "k8s.io", "image", "tag", name, full]);
    }
}

#[test]
fn a_pod_runs_through_containerds_cri_with_the_cabin_handler() {
    let dir = std::env::temp_dir().join(format!("cabin-cri-{}", std::process::id()));
    let cni = std::env::temp_dir().join(format!("cabin-cri-{}-cni", std::process::id()));
    let c = Containerd::start_with(&dir, &config(&cni));
    import_images(&c);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cri = client(&c.socket).await;
        let version = cri
            .version(cri::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(version.runtime_name, "containerd");

        let logs = c.dir.join("pod-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "pod1".into(),
                uid: "uid-1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "pod1".into(),
            log_directory: logs.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = cri
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: "cabin".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id;

        // A host directory both the server and the client mount, as a kubelet mounts
        // a pod's emptyDir volume into its containers.
        let shared = c.dir.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        let greeting = c.dir.join("greeting.txt");
        std::fs::write(&greeting, "hello, file\n").unwrap();
        let create = |name: &str, command: &[&str]| {
            let mut config = container(name, command, &format!("{name}.log"));
            if name != "once" {
                config.mounts = vec![
                    cri::Mount {
                        container_path: "/shared".into(),
                        host_path: shared.display().to_string(),
                        ..Default::default()
                    },
                    // A single file, as a kubelet binds a pod's /etc/hosts and
                    // /etc/resolv.conf (CRI binds those too).
                    cri::Mount {
                        container_path: "/etc/greeting".into(),
                        host_path: greeting.display().to_string(),
                        readonly: true,
                        ..Default::default()
                    },
                ];
            }
            if name == "client" {
                // A user other than root, with the capabilities CRI gives it.
                config.linux = Some(cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        run_as_user: Some(cri::Int64Value { value: 1000 }),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            }
        };
        let mut ids = Vec::new();
        for (name, command) in [
            ("once", &["sh", "-c", "echo hello from a pod; hostname"][..]),
            (
                "server",
                &[
                    "sh",
                    "-c",
                    "echo served in the pod > /tmp/index.html; echo from the server > /shared/note; \
                     exec httpd -f -p 127.0.0.1:8080 -h /tmp",
                ][..],
            ),
            ("client", &["sleep", "600"][..]),
        ] {
            let id = cri
                .create_container(create(name, command))
                .await
                .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
                .into_inner()
                .container_id;
            cri.start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
            ids.push(id);
        }

        // The first one ran and ended; its output is in the pod's log, in CRI's format.
        let status = exited(&mut cri, &ids[0]).await;
        assert_eq!(status.exit_code, 0, "{status:?}");
        let log = std::fs::read_to_string(logs.join("once.log")).unwrap();
        assert!(log.contains(" stdout F hello from a pod"), "{log}");
        assert!(log.contains(" stdout F pod1"), "the pod's host name: {log}");

        // In cabin's store, as containerd's (namespace k8s.io): the sandbox and the two
        // running containers (CRI has deleted the ended one's task), all in one VM.
        let count = |c: &Containerd| {
            let tasks = c.cabin_tasks();
            let pods = tasks
                .iter()
                .filter(|l| l.contains("containerd.k8s.io."))
                .count();
            (pods, qemu_processes_mentioning(&c.data).len(), tasks)
        };
        eventually("the ended container's task to go", || count(&c).0 == 3);
        let (_, vms, tasks) = count(&c);
        assert_eq!(vms, 1, "one VM for the pod: {tasks:?}");
        assert!(tasks.iter().any(|l| l.contains("sleep 600")), "{tasks:?}");

        // ExecSync in a running one: output, exit code.
        let exec_sync = |id: &str, script: &str| {
            let request = cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 60,
            };
            let mut cri = cri.clone();
            async move {
                cri.exec_sync(request)
                    .await
                    .unwrap_or_else(|e| panic!("ExecSync: {e}"))
                    .into_inner()
            }
        };
        let exec = exec_sync(&ids[2], "echo in the pod; exit 3").await;
        assert_eq!(String::from_utf8_lossy(&exec.stdout), "in the pod\n");
        assert_eq!(exec.exit_code, 3);

        // The pod's containers share its network: the client reaches the server on
        // localhost. Their files and processes are their own; the host name is the
        // pod's.
        let deadline = Instant::now() + Duration::from_secs(60);
        let fetched = loop {
            let r = exec_sync(&ids[2], "wget -qO- http://127.0.0.1:8080/index.html").await;
            if r.exit_code == 0 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(
            String::from_utf8_lossy(&fetched.stdout),
            "served in the pod\n",
            "{}",
            String::from_utf8_lossy(&fetched.stderr)
        );
        let own = exec_sync(&ids[2], "test ! -e /tmp/index.html && hostname && id -u").await;
        assert_eq!(
            (own.exit_code, String::from_utf8_lossy(&own.stdout).as_ref()),
            (0, "pod1\n1000\n"),
            "the client sees its own /tmp, the pod's host name, and runs as its user"
        );
        let note = exec_sync(&ids[2], "cat /shared/note /etc/greeting").await;
        assert_eq!(
            String::from_utf8_lossy(&note.stdout),
            "from the server\nhello, file\n",
            "the pod's shared folder: {}",
            String::from_utf8_lossy(&note.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(shared.join("note")).unwrap(),
            "from the server\n"
        );
        // New limits for a running container (a kubelet's in-place resize): at once
        // in its cgroup.
        cri.clone()
            .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: ids[2].clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}"));
        let limit = exec_sync(&ids[2], "cat /sys/fs/cgroup/memory.max").await;
        assert_eq!(String::from_utf8_lossy(&limit.stdout), "67108864\n");
        let caps = exec_sync(&ids[2], "grep CapBnd /proc/self/status").await;
        assert_eq!(
            String::from_utf8_lossy(&caps.stdout),
            "CapBnd:\t00000000a80425fb\n",
            "CRI's default capabilities"
        );
        let ps = exec_sync(&ids[2], "ps -o comm").await;
        assert!(
            !String::from_utf8_lossy(&ps.stdout).contains("httpd"),
            "the server's processes are not the client's: {}",
            String::from_utf8_lossy(&ps.stdout)
        );

        // Its figures, from the guest's cgroup.
        let stats = cri
            .container_stats(cri::ContainerStatsRequest {
                container_id: ids[2].clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStats: {e}"))
            .into_inner()
            .stats
            .unwrap();
        let memory = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value);
        assert!(memory.is_some_and(|m| m > 0), "{memory:?}");

        // The pod's VM dies under its containers: each of them ends, and containerd
        // hears of it.
        let vms = qemu_processes_mentioning(&c.data);
        // SAFETY: kill(2) of the pod's QEMU, found above.
        unsafe { libc::kill(vms[0], libc::SIGKILL) };
        for id in &ids[1..] {
            let status = exited(&mut cri, id).await;
            assert_ne!(status.exit_code, 0, "{status:?}");
        }

        end_pod(&mut cri, &pod).await;
    });
    c.assert_nothing_left();
    let _ = std::fs::remove_dir_all(&cni);
}

/// The bridge CNI makes on the host for the pod network test.
const CNI_BRIDGE: &str = "cabincni0";

#[test]
fn a_pod_on_a_cni_network_has_its_address_in_its_vm_and_serves_on_it() {
    let dir = std::env::temp_dir().join(format!("cabin-cri-net-{}", std::process::id()));
    let cni = std::env::temp_dir().join(format!("cabin-cri-net-{}-cni", std::process::id()));
    let config = config(&cni);
    // CNI's bridge plugin with host-local addresses: a veth into the pod's network
    // namespace, as a cluster's network plugin makes one.
    std::fs::write(
        cni.join("10-cabin-test.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "cabin-test", "plugins": [
                {{"type": "bridge", "bridge": "{CNI_BRIDGE}", "isGateway": true, "ipMasq": false,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.211.0.0/24"}}]],
                           "dataDir": "{}"}}}}]}}"#,
            cni.join("ipam").display()
        ),
    )
    .unwrap();
    let c = Containerd::start_with(&dir, &config);
    import_images(&c);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cri = client(&c.socket).await;
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "uid-2".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web".into(),
            log_directory: c.dir.join("pod-logs").display().to_string(),
            ..Default::default()
        };
        // CRI waits for CNI's configuration to be loaded.
        let deadline = Instant::now() + Duration::from_secs(30);
        let pod = loop {
            match cri
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(sandbox_config.clone()),
                    runtime_handler: "cabin".into(),
                })
                .await
            {
                Ok(r) => break r.into_inner().pod_sandbox_id,
                Err(e) if Instant::now() < deadline && e.message().contains("cni") => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(e) => panic!("RunPodSandbox: {e}"),
            }
        };
        let ip = cri
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        assert!(ip.starts_with("10.211.0."), "the pod's address: {ip:?}");

        let mut server = container(
            "server",
            &[
                "sh",
                "-c",
                "ip -4 addr show eth0 > /tmp/index.html; exec httpd -f -p 8080 -h /tmp",
            ],
            "server.log",
        );
        server.linux = None;
        let id = cri
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(server),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
            .into_inner()
            .container_id;
        cri.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));

        // From the host, at the pod's address: the guest's card answers, with that
        // address as its own.
        let deadline = Instant::now() + Duration::from_secs(60);
        let page = loop {
            let fetched = async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect((ip.as_str(), 8080)).await?;
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await?;
                let mut page = String::new();
                s.read_to_string(&mut page).await?;
                Ok::<_, std::io::Error>(page)
            };
            match tokio::time::timeout(Duration::from_secs(5), fetched).await {
                Ok(Ok(page)) if page.contains("200 OK") => break page,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "no answer from {ip}:8080: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        assert!(page.contains(&format!("inet {ip}/24")), "{page}");
        assert_eq!(qemu_processes_mentioning(&c.data).len(), 1);

        end_pod(&mut cri, &pod).await;
    });
    c.assert_nothing_left();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", CNI_BRIDGE])
        .status();
    let _ = std::fs::remove_dir_all(&cni);
}
