//! Health checks: Docker's `HEALTHCHECK` (from the image or `--health-cmd`), run inside
//! the container by its supervisor every interval while the container runs. The state
//! (starting, healthy, unhealthy, the failing streak and the last five probes) is kept
//! in `health.json` in the container's directory for inspect and `ps`; each change of
//! status is an event in the journal (`health_status`), which is what compose's
//! `condition: service_healthy` and Testcontainers' wait strategies follow.
//!
//! As Docker does: a probe that exits 0 is a success, anything else (or no answer
//! within the timeout) a failure; `retries` failures in a row make the container
//! unhealthy; failures within the start period do not count until a first success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cabin_base::files::{read_bounded, write_atomic};
use cabin_base::time::now_unix_nanos;
use cabin_proto::v1::{ProcessRef, StartProcessRequest};
use serde::{Deserialize, Serialize};

use crate::agent::{self, Agent};
use crate::process::{self, Output};

/// Probes kept for inspect.
const KEPT_PROBES: usize = 5;
/// A probe's output is cut to this many bytes (as Docker does at 4 KiB).
const MAX_OUTPUT: usize = 4096;
const FILE: &str = "health.json";

/// What a health check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthTest {
    /// `CMD-SHELL`: a command line for `/bin/sh -c`.
    Shell(String),
    /// `CMD`: a program and its arguments.
    Exec(Vec<String>),
}

/// A container's health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub test: HealthTest,
    #[serde(with = "crate::spec::seconds_f64")]
    pub interval: Duration,
    #[serde(with = "crate::spec::seconds_f64")]
    pub timeout: Duration,
    #[serde(with = "crate::spec::seconds_f64")]
    pub start_period: Duration,
    pub retries: u32,
}

impl HealthCheck {
    /// Docker's defaults: every 30 s, 30 s to answer, unhealthy after 3 failures.
    pub fn new(test: HealthTest) -> HealthCheck {
        HealthCheck {
            test,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            start_period: Duration::ZERO,
            retries: 3,
        }
    }

    /// Docker's form of a check (an image's `Healthcheck`, the API's): `test` is
    /// `["CMD-SHELL", line]`, `["CMD", program, args...]` or `["NONE"]` (turned off),
    /// durations in nanoseconds and retries with 0 meaning Docker's default. An empty
    /// test is no check of its own (None).
    pub fn from_docker(
        test: &[String],
        interval_nanos: i64,
        timeout_nanos: i64,
        start_period_nanos: i64,
        retries: i64,
    ) -> Result<Option<HealthCheck>, String> {
        let test = match test.split_first() {
            None => return Ok(None),
            Some((kind, rest)) => match (kind.as_str(), rest) {
                ("NONE", _) => HealthTest::Exec(vec!["NONE".into()]),
                ("CMD-SHELL", [line]) => HealthTest::Shell(line.clone()),
                ("CMD", args) if !args.is_empty() => HealthTest::Exec(args.to_vec()),
                _ => {
                    return Err(format!(
                        "invalid health check test {test:?}: use [\"CMD-SHELL\", LINE], [\"CMD\", PROGRAM, ...] or [\"NONE\"]"
                    ))
                }
            },
        };
        let mut c = HealthCheck::new(test);
        let duration = |n: i64, what: &str| match n {
            0 => Ok(None),
            n if n >= 1_000_000 => Ok(Some(Duration::from_nanos(n as u64))),
            _ => Err(format!("health check {what} must be at least 1ms")),
        };
        if let Some(d) = duration(interval_nanos, "interval")? {
            c.interval = d;
        }
        if let Some(d) = duration(timeout_nanos, "timeout")? {
            c.timeout = d;
        }
        if let Some(d) = duration(start_period_nanos, "start period")? {
            c.start_period = d;
        }
        match retries {
            0 => {}
            n if n > 0 => c.retries = n.min(u32::MAX as i64) as u32,
            _ => return Err("health check retries cannot be negative".into()),
        }
        Ok(Some(c))
    }

    /// A check that turns the image's off (`NONE`).
    pub fn disabled(&self) -> bool {
        matches!(&self.test, HealthTest::Exec(a) if a.first().map(String::as_str) == Some("NONE"))
    }

    /// The program and arguments a probe runs.
    pub fn args(&self) -> Vec<String> {
        match &self.test {
            HealthTest::Shell(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            HealthTest::Exec(args) => args.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// A container's status line with its health, as `docker ps` shows it: "Up 2 minutes
/// (healthy)", "Up 3 seconds (health: starting)".
pub fn describe(status: String, health: Option<HealthStatus>) -> String {
    match health {
        None => status,
        Some(HealthStatus::Starting) => format!("{status} (health: starting)"),
        Some(h) => format!("{status} ({})", h.as_str()),
    }
}

/// One probe: when it ran, how it ended, what it printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub exit_code: i32,
    pub output: String,
}

/// A container's health now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: Vec<Probe>,
}

impl Health {
    fn starting() -> Health {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Takes a probe's result in; `counts` is false for a failure within the start
    /// period before any success.
    fn record(&mut self, probe: Probe, counts: bool) {
        if probe.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if counts {
            self.failing_streak += 1;
        }
        self.log.push(probe);
        if self.log.len() > KEPT_PROBES {
            self.log.remove(0);
        }
    }

    fn judge(&mut self, retries: u32) {
        if self.failing_streak >= retries.max(1) {
            self.status = HealthStatus::Unhealthy;
        }
    }
}

fn path(container_dir: &Path) -> PathBuf {
    container_dir.join(FILE)
}

/// The container's health as last written (None: it has no check, or never ran one).
pub fn read(container_dir: &Path) -> Option<Health> {
    let bytes = read_bounded(&path(container_dir), 64 << 10).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Puts the container's health back to starting (no probe yet), as each start of a
/// container with a check must before the container counts as running: Docker's
/// inspect never shows a running container with a check but no health, and clients
/// (compose's `condition: service_healthy`) take a missing health for a missing check.
pub fn begin(container_dir: &Path) -> std::io::Result<()> {
    save(container_dir, &Health::starting())
}

/// Runs `check` in the container for as long as the returned future is polled (the
/// supervisor drops it when the process ends, and has called [`begin`] before):
/// writes the health after every probe and calls `changed` with each new status
/// (starting first).
pub async fn run(
    agent: Agent,
    container_id: String,
    env: Vec<String>,
    user: String,
    check: HealthCheck,
    container_dir: PathBuf,
    changed: impl Fn(HealthStatus),
) {
    let mut health = Health::starting();
    changed(HealthStatus::Starting);
    let started = tokio::time::Instant::now();
    let mut ever_healthy = false;
    let mut n = 0u64;
    loop {
        tokio::time::sleep(check.interval).await;
        n += 1;
        let probe = probe(&agent, &container_id, n, &env, &user, &check).await;
        let counts = ever_healthy || started.elapsed() >= check.start_period;
        let before = health.status;
        health.record(probe, counts);
        health.judge(check.retries);
        ever_healthy |= health.status == HealthStatus::Healthy;
        let _ = save(&container_dir, &health);
        if health.status != before {
            changed(health.status);
        }
    }
}

fn save(container_dir: &Path, health: &Health) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(health).map_err(std::io::Error::other)?;
    write_atomic(&path(container_dir), &bytes, 0o600)
}

/// Runs one probe to its end or its timeout (then it is killed).
async fn probe(
    agent: &Agent,
    container_id: &str,
    n: u64,
    env: &[String],
    user: &str,
    check: &HealthCheck,
) -> Probe {
    let start_unix_nanos = now_unix_nanos();
    let process = ProcessRef {
        container_id: container_id.to_string(),
        // cabin-init forgets processes named so once their end is told.
        process_id: format!("health-{n}"),
    };
    let ended = |exit_code: i32, output: String| Probe {
        start_unix_nanos,
        end_unix_nanos: now_unix_nanos(),
        exit_code,
        output,
    };
    let start = StartProcessRequest {
        container_id: container_id.to_string(),
        process_id: process.process_id.clone(),
        args: check.args(),
        env: env.to_vec(),
        cwd: String::new(),
        user: user.to_string(),
        tty: false,
        tty_size: None,
        rlimits: Vec::new(),
        stdin: false,
        init: false,
        // The container's first process's, in the guest.
        capabilities: None,
        no_new_privileges: false,
    };
    let mut a = agent.clone();
    if let Err(e) = agent::call(
        "StartProcess",
        cabin_proto::CALL_TIMEOUT,
        a.start_process(start),
    )
    .await
    {
        return ended(-1, e.message().to_string());
    }
    let run = async {
        let mut output = process::output(agent, process.clone());
        let mut text = Vec::new();
        while let Some(Output { data, .. }) = output.recv().await {
            let room = MAX_OUTPUT.saturating_sub(text.len());
            text.extend_from_slice(&data[..data.len().min(room)]);
        }
        let code = match a.clone().wait(process.clone()).await {
            Ok(s) => process::exit_code(&s.into_inner()),
            Err(_) => -1,
        };
        (code, String::from_utf8_lossy(&text).into_owned())
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok((code, output)) => ended(code, output),
        Err(_) => {
            let _ =
                process::signal(agent, &process, libc::SIGKILL, cabin_proto::CALL_TIMEOUT).await;
            // Waited for, so that the guest forgets it.
            let _ =
                tokio::time::timeout(cabin_proto::CALL_TIMEOUT, a.clone().wait(process.clone()))
                    .await;
            ended(
                -1,
                format!(
                    "Health check exceeded timeout ({}s)",
                    check.timeout.as_secs_f64()
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(code: i32) -> Probe {
        Probe {
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn failures_in_a_row_make_it_unhealthy_and_a_success_heals_it() {
        let mut h = Health::starting();
        for _ in 0..2 {
            h.record(probe(1), true);
            h.judge(3);
        }
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 2));
        h.record(probe(1), true);
        h.judge(3);
        assert_eq!(h.status, HealthStatus::Unhealthy);
        h.record(probe(0), true);
        h.judge(3);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            h.record(probe(0), true);
        }
        assert_eq!(h.log.len(), KEPT_PROBES);
    }

    #[test]
    fn the_status_line_tells_the_health() {
        let up = || "Up 5 seconds".to_string();
        assert_eq!(describe(up(), None), "Up 5 seconds");
        assert_eq!(
            describe(up(), Some(HealthStatus::Starting)),
            "Up 5 seconds (health: starting)"
        );
        assert_eq!(
            describe(up(), Some(HealthStatus::Unhealthy)),
            "Up 5 seconds (unhealthy)"
        );
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut h = Health::starting();
        h.record(probe(1), false);
        h.judge(1);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        h.record(probe(1), true);
        h.judge(1);
        assert_eq!(h.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn dockers_form_of_a_check_is_read_with_its_defaults() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = HealthCheck::from_docker(&s(&["CMD-SHELL", "curl -f x"]), 2_000_000_000, 0, 0, 5)
            .unwrap()
            .unwrap();
        assert_eq!(c.test, HealthTest::Shell("curl -f x".into()));
        assert_eq!(
            (c.interval, c.timeout, c.retries),
            (Duration::from_secs(2), Duration::from_secs(30), 5)
        );
        let c = HealthCheck::from_docker(&s(&["CMD", "/bin/check", "-q"]), 0, 0, 0, 0)
            .unwrap()
            .unwrap();
        assert_eq!(c.args(), ["/bin/check", "-q"]);
        assert!(HealthCheck::from_docker(&s(&["NONE"]), 0, 0, 0, 0)
            .unwrap()
            .unwrap()
            .disabled());
        assert_eq!(HealthCheck::from_docker(&[], 0, 0, 0, 0).unwrap(), None);
        assert!(HealthCheck::from_docker(&s(&["CMD"]), 0, 0, 0, 0).is_err());
        assert!(HealthCheck::from_docker(&s(&["CMD-SHELL", "x"]), 5, 0, 0, 0).is_err());
    }

    #[test]
    fn checks_keep_their_shape_on_disk() {
        let mut c = HealthCheck::new(HealthTest::Shell("true".into()));
        c.interval = Duration::from_millis(500);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["test"]["shell"], "true");
        assert_eq!(v["interval"], 0.5);
        let back: HealthCheck = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.args(), ["/bin/sh", "-c", "true"]);
    }
}
