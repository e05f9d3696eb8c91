//! `cabin system check [--repair]`: the image store's and the VMs' consistency, as the
//! libraries judge it, printed one problem a line with what `--repair` does about it.
//! Exits 0 when nothing is wrong (after the repairs, with `--repair`), 1 otherwise.

use cabin_base::Host;
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
    println!(
        "Checked {} blobs, {} image names, {} VMs",
        image_report.blobs, image_report.images, vm_count
    );
    let mut left = 0;
    let done: Vec<Option<Result<(), cabin_image::store::StoreError>>> = if repair {
        images::repair(&store, &image_report.problems)
            .into_iter()
            .map(|(_, done)| Some(done))
            .collect()
    } else {
        image_report.problems.iter().map(|_| None).collect()
    };
    for (p, done) in image_report.problems.iter().zip(done) {
        let fix = p.repair(&store);
        println!("problem: {p}");
        match (&fix, done) {
            (Repair::Manual(what), _) => {
                println!("  to do: {what}");
                left += 1;
            }
            (fix, None) => {
                println!("  --repair would {fix}");
                left += 1;
            }
            (fix, Some(Ok(()))) => println!("  repaired: {fix}"),
            (fix, Some(Err(e))) => {
                println!("  could not {fix}: {e}");
                left += 1;
            }
        }
    }
    for p in &vm_problems {
        println!("problem: {p}");
        match (p.repair(), repair) {
            (Err(what), _) => {
                println!("  to do: {what}");
                left += 1;
            }
            (Ok(fix), false) => {
                println!("  --repair would {fix}");
                left += 1;
            }
            (Ok(fix), true) => match vms::repair(p) {
                Ok(()) => println!("  repaired: {fix}"),
                Err(e) => {
                    println!("  could not {fix}: {e}");
                    left += 1;
                }
            },
        }
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
