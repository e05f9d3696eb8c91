//! `cabin system check [--repair]`: the consistency of the image store, the VMs, the
//! containers and the volumes, as the libraries judge it, printed one problem at a time
//! with what `--repair` does about it. Exits 0 when nothing is wrong (after the
//! repairs, with `--repair`), 1 otherwise.

use cabin_base::Host;
use cabin_containers::check as containers;
use cabin_image::check::{self as images, Repair};
use cabin_image::store::Store;
use cabin_machines::check as vms;
use cabin_machines::settings::Settings;

use crate::report::Failure;

pub fn run(host: &Host, repair: bool) -> Result<i32, Failure> {
    let store = Store::open(host.paths.image_store()).map_err(Failure::new)?;
    let settings = Settings::load(&host.paths).map_err(Failure::new)?;
    let image_report = images::check(&store).map_err(Failure::new)?;
    let (vm_count, vm_problems) = vms::check(&settings).map_err(Failure::new)?;
    let (container_count, volume_count, container_problems) =
        containers::check(&host.paths).map_err(Failure::new)?;
    println!(
        "Checked {} blobs, {} image names, {} VMs, {} containers, {} volumes",
        image_report.blobs, image_report.images, vm_count, container_count, volume_count
    );
    let mut left = 0;
    for p in &image_report.problems {
        let what = match p.repair(&store) {
            Repair::Manual(what) => Err(what),
            fix => Ok(fix.to_string()),
        };
        left += present(p, what, repair.then_some(|| images::repair_one(&store, p)));
    }
    for p in &vm_problems {
        left += present(p, p.repair(), repair.then_some(|| vms::repair(p)));
    }
    for p in &container_problems {
        left += present(p, p.repair(), repair.then_some(|| containers::repair(p)));
    }
    if left == 0 {
        println!("The store is consistent");
        Ok(0)
    } else {
        println!(
            "{left} problem{} left{}",
            if left == 1 { "" } else { "s" },
            if repair {
                ""
            } else {
                " (cabin system check --repair fixes what it can)"
            }
        );
        Ok(1)
    }
}

/// Prints a problem and what is (or would be) done about it, doing it when `fix` is
/// given; 1 when the problem is left, 0 when it was repaired.
fn present<E: std::fmt::Display>(
    problem: &dyn std::fmt::Display,
    repair: Result<String, String>,
    fix: Option<impl FnOnce() -> Result<(), E>>,
) -> usize {
    println!("problem: {problem}");
    match (repair, fix) {
        (Err(what), _) => {
            println!("  to do: {what}");
            1
        }
        (Ok(what), None) => {
            println!("  --repair would {what}");
            1
        }
        (Ok(what), Some(fix)) => match fix() {
            Ok(()) => {
                println!("  repaired: {what}");
                0
            }
            Err(e) => {
                println!("  could not {what}: {e}");
                1
            }
        },
    }
}
