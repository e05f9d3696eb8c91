//! What a guest's serial console says about how the guest died, for error messages: the
//! kernel's own panic line wherever it stands in the output read, and the last lines.
//!
//! A panicking Linux kernel prints `Kernel panic - not syncing: REASON` and then a call
//! trace that easily runs past any short tail; the reason is what the user needs, so it is
//! looked for in the whole excerpt, not only in the lines shown.

use std::fmt;

/// How much of the console's end is searched for the panic line.
pub const SEARCHED_BYTES: usize = 64 << 10;
/// How many of the last lines are shown.
pub const SHOWN_LINES: usize = 15;

const PANIC_MARK: &str = "Kernel panic - not syncing:";

/// The part of a console worth showing when a VM failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleExcerpt {
    /// The kernel's panic line (`Kernel panic - not syncing: ...`), if it panicked.
    pub panic: Option<String>,
    /// The console's last lines, oldest first.
    pub last_lines: Vec<String>,
}

impl ConsoleExcerpt {
    /// The excerpt of a console's `text` (its end, as read).
    pub fn of(text: &str) -> ConsoleExcerpt {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty())
            .collect();
        // The first panic line: a panic while panicking prints more, but the first says why.
        let panic = lines.iter().find_map(|l| {
            l.find(PANIC_MARK)
                .map(|at| l[at..].trim_end().trim_end_matches(" ]---").to_string())
        });
        let from = lines.len().saturating_sub(SHOWN_LINES);
        ConsoleExcerpt {
            panic,
            last_lines: lines[from..].iter().map(|l| l.to_string()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.panic.is_none() && self.last_lines.is_empty()
    }
}

/// Nothing for an empty excerpt; else a new line, the panic line when there is one, and
/// the last lines indented.
impl fmt::Display for ConsoleExcerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.panic {
            write!(f, "\nthe guest kernel panicked: {p}")?;
        }
        if !self.last_lines.is_empty() {
            write!(
                f,
                "\nlast lines of the guest console:\n  {}",
                self.last_lines.join("\n  ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_line_is_found_above_a_long_call_trace() {
        let mut text = String::from(
            "[    0.5] Run /nonexistent as init process\n\
             [    0.6] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.\n\
             [    0.6] CPU: 0 UID: 0 PID: 1 Comm: swapper/0\n\
             [    0.6] Call Trace:\n",
        );
        for i in 0..40 {
            text.push_str(&format!("[    0.6]  frame_{i}+0x10/0x20\n"));
        }
        let e = ConsoleExcerpt::of(&text);
        assert_eq!(
            e.panic.as_deref(),
            Some("Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.")
        );
        assert_eq!(e.last_lines.len(), SHOWN_LINES);
        assert!(e.last_lines.iter().all(|l| l.contains("frame_")));
        let shown = e.to_string();
        assert!(shown.starts_with(
            "\nthe guest kernel panicked: Kernel panic - not syncing: No working init found."
        ));
        assert!(shown.contains("\nlast lines of the guest console:\n  [    0.6]  frame_25"));
    }

    #[test]
    fn the_end_marker_of_a_panic_gives_the_same_line() {
        let e = ConsoleExcerpt::of(
            "---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300 ]---\r\n",
        );
        assert_eq!(
            e.panic.as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300")
        );
    }

    #[test]
    fn a_quiet_console_shows_nothing_and_a_calm_one_no_panic() {
        assert!(ConsoleExcerpt::of("").is_empty());
        assert_eq!(ConsoleExcerpt::of("\n \n").to_string(), "");
        let e = ConsoleExcerpt::of("booting\nready\n");
        assert_eq!(e.panic, None);
        assert_eq!(
            e.to_string(),
            "\nlast lines of the guest console:\n  booting\n  ready"
        );
    }
}
