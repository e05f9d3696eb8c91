//! Guest clocks: CLOCK_BOOTTIME for the host's timings, CLOCK_REALTIME set from the host.

use std::io;

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

fn nanos(ts: libc::timespec) -> i64 {
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

pub fn boottime_nanos() -> u64 {
    nanos(now(libc::CLOCK_BOOTTIME)) as u64
}

pub fn set(unix_nanos: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: unix_nanos.div_euclid(1_000_000_000),
        tv_nsec: unix_nanos.rem_euclid(1_000_000_000),
    };
    // SAFETY: clock_settime with a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the clock from the host's unless it is already within 50 ms (a guest that booted
/// from the RTC alone is off by up to a second).
pub fn set_if_off(host_unix_nanos: i64) {
    let guest = nanos(now(libc::CLOCK_REALTIME));
    if (guest - host_unix_nanos).abs() > 50_000_000 {
        let _ = set(host_unix_nanos);
    }
}
