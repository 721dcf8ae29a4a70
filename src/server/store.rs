//! The server's record of test groups and their runs.
//!
//! Runs are appended under one lock from every loop thread, so none is lost
//! (the original appended to a shared list from many goroutines without a
//! lock and dropped about one run in two thousand under concurrency). A run
//! costs 64 bytes plus its body, and consecutive runs with the same body
//! share one allocation.

use crate::wire::{GroupConfig, GroupHeader};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Capacity bounds, so no client can grow the server without limit.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_groups: usize,
    /// Recorded runs across all groups.
    pub max_runs: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_groups: 10_000,
            max_runs: 50_000_000,
        }
    }
}

pub use crate::wire::{RecordedRun as Run, UpstreamOutcome};

pub struct Group {
    pub header: GroupHeader,
    pub runs: Vec<Run>,
    /// Runs received and not yet recorded (upstream or delay under way),
    /// across every loop thread.
    pub in_progress: u64,
    /// Creation order, for listing.
    created: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    UnknownGroup,
    Full(String),
}

pub struct Store {
    limits: StoreLimits,
    groups: HashMap<Uuid, Group>,
    total_runs: u64,
    created: u64,
}

impl Store {
    pub fn new(limits: StoreLimits) -> Store {
        Store {
            limits,
            groups: HashMap::new(),
            total_runs: 0,
            created: 0,
        }
    }

    pub fn create(
        &mut self,
        config: GroupConfig,
        created_at: String,
    ) -> Result<&Group, StoreError> {
        if self.groups.len() >= self.limits.max_groups {
            return Err(StoreError::Full(format!(
                "the server holds its limit of {} groups (--max-groups); DELETE /test-groups/ID frees one",
                self.limits.max_groups
            )));
        }
        let id = Uuid::new_v4();
        self.created += 1;
        let group = Group {
            header: GroupHeader {
                run_group_id: id,
                created_at,
                config,
            },
            runs: Vec::new(),
            in_progress: 0,
            created: self.created,
        };
        Ok(self.groups.entry(id).or_insert(group))
    }

    pub fn get(&self, id: &Uuid) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn delete(&mut self, id: &Uuid) -> bool {
        match self.groups.remove(id) {
            Some(group) => {
                self.total_runs -= group.runs.len() as u64;
                true
            }
            None => false,
        }
    }

    /// Groups in creation order.
    pub fn groups(&self) -> Vec<&Group> {
        let mut all: Vec<&Group> = self.groups.values().collect();
        all.sort_by_key(|g| g.created);
        all
    }

    /// A run of the group was received: it is in progress until recorded
    /// (or refused) by [`Store::record`].
    pub fn begin(&mut self, group_id: &Uuid) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.in_progress += 1;
        }
    }

    /// Whether one more run may be recorded.
    pub fn check_room(&self) -> Result<(), StoreError> {
        if self.total_runs >= self.limits.max_runs {
            return Err(StoreError::Full(format!(
                "the server holds its limit of {} runs (--max-runs); DELETE /test-groups/ID frees a group's runs",
                self.limits.max_runs
            )));
        }
        Ok(())
    }

    /// Appends a run to its group. The body shares the previous run's
    /// allocation when it is the same bytes (a fixed `-d` body).
    /// The run is no longer in progress, recorded or not.
    pub fn record(&mut self, group_id: &Uuid, mut run: Run, body: &[u8]) -> Result<(), StoreError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(StoreError::UnknownGroup)?;
        group.in_progress = group.in_progress.saturating_sub(1);
        if self.total_runs >= self.limits.max_runs {
            return self.check_room();
        }
        run.data = match group.runs.last() {
            Some(prev) if *prev.data == *body => Arc::clone(&prev.data),
            _ => Arc::from(body),
        };
        group.runs.push(run);
        self.total_runs += 1;
        Ok(())
    }

    pub fn total_runs(&self) -> u64 {
        self.total_runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GroupConfig {
        GroupConfig::from_json(br#"{"run_count": 3}"#).unwrap()
    }

    fn run(n: u64) -> Run {
        Run {
            run_id: Uuid::new_v4(),
            run_count: n,
            server_start: 1,
            server_end: 2,
            data: Arc::from(&b""[..]),
            upstream: None,
        }
    }

    /// A store with these limits and one group in it.
    fn store_with_a_group(limits: StoreLimits) -> (Store, Uuid) {
        let mut store = Store::new(limits);
        let id = store
            .create(config(), String::new())
            .unwrap()
            .header
            .run_group_id;
        (store, id)
    }

    #[test]
    fn records_in_arrival_order_and_shares_equal_bodies() {
        let (mut store, id) = store_with_a_group(StoreLimits::default());
        store.record(&id, run(2), b"same").unwrap();
        store.record(&id, run(1), b"same").unwrap();
        store.record(&id, run(1), b"other").unwrap();
        let runs = &store.get(&id).unwrap().runs;
        assert_eq!(
            runs.iter().map(|r| r.run_count).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert!(Arc::ptr_eq(&runs[0].data, &runs[1].data));
        assert_eq!(&*runs[2].data, b"other");
        assert_eq!(
            store.record(&Uuid::nil(), run(1), b""),
            Err(StoreError::UnknownGroup)
        );
    }

    #[test]
    fn limits_hold_and_delete_frees() {
        let (mut store, id) = store_with_a_group(StoreLimits {
            max_groups: 1,
            max_runs: 2,
        });
        assert!(
            matches!(store.create(config(), String::new()), Err(StoreError::Full(m)) if m.contains("--max-groups"))
        );
        store.record(&id, run(1), b"").unwrap();
        store.record(&id, run(2), b"").unwrap();
        assert!(
            matches!(store.record(&id, run(3), b""), Err(StoreError::Full(m)) if m.contains("--max-runs"))
        );
        assert!(store.delete(&id));
        assert_eq!(store.total_runs(), 0);
        assert!(store.create(config(), String::new()).is_ok());
    }

    #[test]
    fn a_run_is_in_progress_until_recorded_or_refused() {
        let (mut store, id) = store_with_a_group(StoreLimits {
            max_groups: 1,
            max_runs: 1,
        });
        let in_progress = |store: &Store| store.get(&id).unwrap().in_progress;
        store.begin(&id);
        store.begin(&id);
        assert_eq!(in_progress(&store), 2);
        store.record(&id, run(1), b"").unwrap();
        assert_eq!(in_progress(&store), 1);
        assert!(store.record(&id, run(2), b"").is_err(), "the store is full");
        assert_eq!(
            in_progress(&store),
            0,
            "a refused run is no longer in progress"
        );
    }
}
