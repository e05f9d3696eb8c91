//! The server's log: Lume's line format (`[<ISO8601>] INFO: <msg> k=v`) on stdout, and
//! the recent lines kept in memory for `GET /lume/logs` (Lume reads its daemon's log
//! files there; cabin's server has no files of its own).

use std::collections::VecDeque;
use std::sync::Mutex;

const KEEP: usize = 2000;

#[derive(Default)]
pub struct Log {
    info: Mutex<VecDeque<String>>,
    error: Mutex<VecDeque<String>>,
}

fn keep(q: &Mutex<VecDeque<String>>, line: String) {
    let mut q = q.lock().unwrap_or_else(|p| p.into_inner());
    if q.len() == KEEP {
        q.pop_front();
    }
    q.push_back(line);
}

impl Log {
    pub fn info(&self, msg: &str) {
        let line = format!("[{}] INFO: {msg}", cabin_base::time::now_rfc3339());
        println!("{line}");
        keep(&self.info, line);
    }

    pub fn error(&self, msg: &str) {
        let line = format!("[{}] ERROR: {msg}", cabin_base::time::now_rfc3339());
        println!("{line}");
        keep(&self.error, line);
    }

    /// The last `lines` lines (all kept ones without a count) of the info or error log.
    pub fn tail(&self, error: bool, lines: Option<usize>) -> String {
        let q = if error { &self.error } else { &self.info };
        let q = q.lock().unwrap_or_else(|p| p.into_inner());
        let skip = lines.map_or(0, |n| q.len().saturating_sub(n));
        q.iter()
            .skip(skip)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}
