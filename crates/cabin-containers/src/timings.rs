//! Where a run's time goes, for `cabin run --timings` and the benchmarks.

use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Timings {
    start: Instant,
    marks: Vec<(&'static str, Duration, String)>,
}

impl Timings {
    pub fn start_at(start: Instant) -> Timings {
        Timings {
            start,
            marks: Vec::new(),
        }
    }

    pub fn mark(&mut self, what: &'static str) {
        self.mark_with(what, String::new());
    }

    pub fn mark_with(&mut self, what: &'static str, note: String) {
        self.marks.push((what, self.start.elapsed(), note));
    }

    pub fn get(&self, what: &str) -> Option<Duration> {
        self.marks.iter().find(|m| m.0 == what).map(|m| m.1)
    }
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<28} {:>10} {:>10}", "phase", "at (ms)", "took (ms)")?;
        let mut prev = Duration::ZERO;
        for (what, at, note) in &self.marks {
            let took = at.saturating_sub(prev);
            write!(
                f,
                "{:<28} {:>10.1} {:>10.1}",
                what,
                at.as_secs_f64() * 1e3,
                took.as_secs_f64() * 1e3
            )?;
            if !note.is_empty() {
                write!(f, "  {note}")?;
            }
            writeln!(f)?;
            prev = *at;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_phases_in_order_with_durations() {
        let mut t = Timings::start_at(Instant::now());
        t.mark("one");
        t.mark_with("two", "note".into());
        let s = t.to_string();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("one"));
        assert!(lines[2].starts_with("two") && lines[2].ends_with("note"));
        assert!(t.get("two").unwrap() >= t.get("one").unwrap());
    }
}
