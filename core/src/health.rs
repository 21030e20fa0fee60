//! Readiness checks: components register a check, `/readyz` answers 503 with every failing
//! check's reason (the sequencer stopped, for one) instead of only "started or not". Notices
//! are what an operator should read without the process being unready (damage replay found).

use std::sync::{Arc, Mutex};

type Check = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The process's readiness checks; clones share them.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<Vec<Check>>>,
    notices: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("checks", &self.lock().len()).finish()
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Check>> {
        // A check is a plain read; a panic in one leaves the list intact.
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a check: `None` while healthy, else why not.
    pub fn add(&self, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.lock().push(Arc::new(check));
    }

    /// Adds a notice shown by `/readyz` for the life of the process.
    pub fn notice(&self, what: impl Into<String>) {
        self.notices.lock().unwrap_or_else(|e| e.into_inner()).push(what.into());
    }

    /// Every notice, oldest first.
    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the process is not ready, one reason per failing check.
    pub fn problems(&self) -> Vec<String> {
        let checks: Vec<Check> = self.lock().clone();
        checks.iter().filter_map(|c| c()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn failing_checks_are_reported() {
        let h = Health::default();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        h.clone().add(move || (!flag.load(Ordering::Acquire)).then(|| "sequencer stopped".to_string()));
        h.add(|| None);
        assert!(h.problems().is_empty());
        up.store(false, Ordering::Release);
        assert_eq!(h.problems(), ["sequencer stopped"]);
        h.notice("segment 3 damaged");
        assert_eq!(h.notices(), ["segment 3 damaged"]);
    }
}
