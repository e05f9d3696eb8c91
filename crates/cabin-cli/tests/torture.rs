//! Crash consistency in CI: `scripts/torture.sh` in its short form. It kills cabin with
//! SIGKILL at random moments of pull, import, run, run -d, rm, volume create, vm create,
//! vm clone, vm push and vm pull, then requires that the same command succeeds when run
//! again and that `cabin system check` finds the store consistent. The long run (hundreds
//! of kills) is `scripts/torture.sh --rounds 30`.

use std::path::Path;
use std::process::Command;

#[test]
fn cabin_killed_at_random_moments_leaves_nothing_a_retry_or_the_store_check_trips_on() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/torture.sh");
    let o = Command::new(&script)
        .args(["--rounds", "2"])
        .env("CABIN", env!("CARGO_BIN_EXE_cabin"))
        .env("CABIN_ACCEL", "tcg")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "torture failed:\n{stdout}\n{stderr}");
    // The summary's last line: "N kills in S s; ...". Kills must really have landed.
    let kills: u32 = stdout
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    assert!(
        kills >= 10,
        "only {kills} kills landed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}
