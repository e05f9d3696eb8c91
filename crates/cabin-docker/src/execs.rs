//! The execs of a server, as Docker keeps them: made by a create, run by a start,
//! remembered after for their exit code (the oldest finished ones forgotten first).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::StatusCode;
use cabin_containers::control::ExecRequest;
use cabin_containers::exec::Resizer;

use crate::error::ApiError;

/// Execs remembered at once; the oldest finished ones are forgotten first.
const MAX_EXECS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited(i32),
}

#[derive(Clone)]
pub struct Exec {
    pub container: String,
    pub req: ExecRequest,
    pub stdout: bool,
    pub stderr: bool,
    pub state: State,
    /// Order of creation, for forgetting the oldest.
    pub serial: u64,
    /// Resizes its terminal once it runs (with one).
    pub resizer: Option<Resizer>,
}

/// The execs of this server.
#[derive(Default)]
pub struct Execs {
    inner: Mutex<(HashMap<String, Exec>, u64)>,
}

impl Execs {
    pub fn insert(&self, id: String, mut exec: Exec) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, serial) = &mut *guard;
        *serial += 1;
        exec.serial = *serial;
        if map.len() >= MAX_EXECS {
            let oldest = map
                .iter()
                .filter(|(_, e)| matches!(e.state, State::Exited(_)))
                .min_by_key(|(_, e)| e.serial)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(id, exec);
    }

    pub fn get(&self, id: &str) -> Result<Exec, ApiError> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(id).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("No such exec instance: {id}"),
            )
        })
    }

    pub fn set(&self, id: &str, state: State) {
        self.update(id, |e| e.state = state);
    }

    pub fn update(&self, id: &str, f: impl FnOnce(&mut Exec)) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = guard.0.get_mut(id) {
            f(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Exec {
        Exec {
            container: "c".into(),
            req: ExecRequest {
                args: vec!["true".into()],
                env: vec![],
                cwd: String::new(),
                user: String::new(),
                stdin: false,
                tty: None,
            },
            stdout: true,
            stderr: true,
            state: State::Created,
            serial: 0,
            resizer: None,
        }
    }

    #[test]
    fn a_full_registry_forgets_the_oldest_finished_exec_never_a_running_one() {
        let execs = Execs::default();
        for i in 0..MAX_EXECS {
            execs.insert(format!("e{i}"), exec());
        }
        execs.set("e0", State::Running);
        execs.set("e1", State::Exited(0));
        execs.set("e2", State::Exited(3));
        execs.insert("new".into(), exec());
        assert!(execs.get("e1").is_err(), "the oldest finished one went");
        assert_eq!(execs.get("e2").unwrap().state, State::Exited(3));
        assert_eq!(execs.get("e0").unwrap().state, State::Running);
        assert!(execs.get("new").is_ok());
        let e = execs.get("nope").err().unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
