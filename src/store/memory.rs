//! The in-memory store: one process's groups under one lock.
//!
//! Runs are appended under that lock from every loop thread, so none is lost
//! (the original appended to a shared list from many goroutines without a
//! lock and dropped about one run in two thousand under concurrency). A run
//! costs 64 bytes plus its body, and consecutive runs with the same body
//! share one allocation. Every operation answers at once.

use super::{
    Backend, GroupStatus, Inbox, Listed, Op, Page, Reply, Run, RunList, ShardPage, ShardStatus,
    StoreError, StoreLimits, Ticket,
};
use crate::json::JsonOut;
use crate::wire::{write_run, GroupConfig, GroupHeader};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

struct Group {
    header: Arc<GroupHeader>,
    runs: Vec<Run>,
    /// Runs begun and not yet recorded, across every loop thread.
    in_progress: u64,
    /// Creation order, for listing.
    created: u64,
    created_ns: i128,
    shards: BTreeMap<u32, Shard>,
}

struct Shard {
    shards: u32,
    runs: Vec<Box<[u8]>>,
    complete: bool,
}

#[derive(Default)]
struct State {
    groups: HashMap<Uuid, Group>,
    total_runs: u64,
    created: u64,
}

/// The default store.
pub struct MemoryStore {
    limits: StoreLimits,
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> MemoryStore {
        MemoryStore {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Carries out `op` now.
    pub fn apply(&self, op: Op) -> Result<Reply, StoreError> {
        // A panic while holding the lock cannot leave a half-appended run
        // (Vec::push is all or nothing), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        match op {
            Op::Create {
                config,
                created_at,
                created_ns,
            } => self.create(state, config, created_at, created_ns),
            Op::List => {
                let mut all: Vec<&Group> = state.groups.values().collect();
                all.sort_by_key(|g| g.created);
                Ok(Reply::List(
                    all.into_iter()
                        .map(|g| Listed {
                            header: Arc::clone(&g.header),
                            recorded_runs: g.runs.len() as u64,
                        })
                        .collect(),
                ))
            }
            Op::Header { id } => Ok(Reply::Group(Arc::clone(&group(state, &id)?.header))),
            Op::Status { id } => {
                let g = group(state, &id)?;
                Ok(Reply::Status(GroupStatus {
                    recorded_runs: g.runs.len() as u64,
                    runs_in_progress: g.in_progress,
                    shards: g
                        .shards
                        .iter()
                        .map(|(&shard, s)| ShardStatus {
                            shard,
                            shards: s.shards,
                            runs: s.runs.len() as u64,
                            complete: s.complete,
                        })
                        .collect(),
                }))
            }
            Op::Delete { id } => {
                let g = state.groups.remove(&id).ok_or(StoreError::UnknownGroup)?;
                state.total_runs -= held(&g);
                Ok(Reply::Done)
            }
            Op::Begin { id } => {
                let room = self.check_room(state);
                let g = group_mut(state, &id)?;
                room?;
                g.in_progress += 1;
                Ok(Reply::Group(Arc::clone(&g.header)))
            }
            Op::Record { id, run, body } => self.record(state, &id, run, &body),
            Op::Read {
                id,
                list,
                from,
                max,
            } => read(group(state, &id)?, list, from, max),
            Op::AppendShard { id, page } => self.append_shard(state, &id, page),
        }
    }

    fn create(
        &self,
        state: &mut State,
        config: GroupConfig,
        created_at: String,
        created_ns: i128,
    ) -> Result<Reply, StoreError> {
        // Expired groups make room first.
        let ttl = self.limits.group_ttl as i128;
        let expired: Vec<Uuid> = state
            .groups
            .iter()
            .filter(|(_, g)| created_ns - g.created_ns >= ttl)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(g) = state.groups.remove(&id) {
                state.total_runs -= held(&g);
                crate::debug!("group {id} expired (--group-ttl)");
            }
        }
        if state.groups.len() >= self.limits.max_groups {
            return Err(StoreError::Full(format!(
                "the server holds its limit of {} groups (--max-groups); DELETE /test-groups/ID frees one",
                self.limits.max_groups
            )));
        }
        let id = Uuid::new_v4();
        state.created += 1;
        let header = Arc::new(GroupHeader {
            run_group_id: id,
            created_at,
            config,
        });
        state.groups.insert(
            id,
            Group {
                header: Arc::clone(&header),
                runs: Vec::new(),
                in_progress: 0,
                created: state.created,
                created_ns,
                shards: BTreeMap::new(),
            },
        );
        Ok(Reply::Group(header))
    }

    fn check_room(&self, state: &State) -> Result<(), StoreError> {
        if state.total_runs >= self.limits.max_runs {
            return Err(StoreError::Full(format!(
                "the server holds its limit of {} runs (--max-runs); DELETE /test-groups/ID frees a group's runs",
                self.limits.max_runs
            )));
        }
        Ok(())
    }

    /// Appends a run to its group. The body shares the previous run's
    /// allocation when it is the same bytes (a fixed `-d` body).
    fn record(
        &self,
        state: &mut State,
        id: &Uuid,
        mut run: Run,
        body: &[u8],
    ) -> Result<Reply, StoreError> {
        let room = self.check_room(state);
        let g = group_mut(state, id)?;
        g.in_progress = g.in_progress.saturating_sub(1);
        room?;
        run.data = match g.runs.last() {
            Some(prev) if *prev.data == *body => Arc::clone(&prev.data),
            _ => Arc::from(body),
        };
        g.runs.push(run);
        state.total_runs += 1;
        Ok(Reply::Done)
    }

    fn append_shard(
        &self,
        state: &mut State,
        id: &Uuid,
        page: ShardPage,
    ) -> Result<Reply, StoreError> {
        let room = self.check_room(state);
        let g = group_mut(state, id)?;
        let shard = g.shards.entry(page.shard).or_insert(Shard {
            shards: page.shards,
            runs: Vec::new(),
            complete: false,
        });
        let held = shard.runs.len() as u64;
        let end = page.from + page.runs.len() as u64;
        if page.from < held && end <= held {
            // A page already held: a retry after a lost answer.
            return Ok(Reply::Appended { runs: held });
        }
        check_shard_page(shard.shards, held, &page)?;
        room?;
        let added = page.runs.len() as u64;
        shard.runs.extend(page.runs);
        shard.complete |= page.last;
        state.total_runs += added;
        Ok(Reply::Appended { runs: held + added })
    }
}

/// Whether `page` continues a shard that holds `held` runs and was uploaded
/// as one of `shards`.
pub fn check_shard_page(shards: u32, held: u64, page: &ShardPage) -> Result<(), StoreError> {
    if shards != page.shards {
        return Err(StoreError::Conflict(format!(
            "shard {} was uploaded as one of {shards} shards, not {}",
            page.shard, page.shards
        )));
    }
    if page.from != held {
        return Err(StoreError::Conflict(format!(
            "shard {} holds {held} runs; a page must start there, not at {}",
            page.shard, page.from
        )));
    }
    Ok(())
}

fn held(g: &Group) -> u64 {
    g.runs.len() as u64 + g.shards.values().map(|s| s.runs.len() as u64).sum::<u64>()
}

fn group<'a>(state: &'a State, id: &Uuid) -> Result<&'a Group, StoreError> {
    state.groups.get(id).ok_or(StoreError::UnknownGroup)
}

fn group_mut<'a>(state: &'a mut State, id: &Uuid) -> Result<&'a mut Group, StoreError> {
    state.groups.get_mut(id).ok_or(StoreError::UnknownGroup)
}

fn read(g: &Group, list: RunList, from: u64, max: usize) -> Result<Reply, StoreError> {
    let from = usize::try_from(from).unwrap_or(usize::MAX);
    let mut page = Page::default();
    match list {
        RunList::Server => {
            let mut json = JsonOut::on(std::mem::take(&mut page.json));
            for run in g.runs.iter().skip(from).take(max) {
                if page.items > 0 {
                    json.raw(b",");
                }
                write_run(&mut json, run);
                page.items += 1;
            }
            page.json = json.buf;
            page.end = from.saturating_add(max) >= g.runs.len();
        }
        RunList::Shard(i) => {
            let shard = g.shards.get(&i).ok_or(StoreError::UnknownShard)?;
            for run in shard.runs.iter().skip(from).take(max) {
                if page.items > 0 {
                    page.json.push(b',');
                }
                page.json.extend_from_slice(run);
                page.items += 1;
            }
            page.end = from.saturating_add(max) >= shard.runs.len();
        }
    }
    Ok(Reply::Page(page))
}

impl Backend for MemoryStore {
    fn submit(&self, op: Op, _ticket: Ticket, _inbox: &Arc<Inbox>) -> Option<Reply> {
        Some(self.apply(op).into())
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
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
            extra: None,
        }
    }

    fn create(store: &MemoryStore, at: i128) -> Result<Uuid, StoreError> {
        match store.apply(Op::Create {
            config: config(),
            created_at: String::new(),
            created_ns: at,
        })? {
            Reply::Group(h) => Ok(h.run_group_id),
            other => panic!("{other:?}"),
        }
    }

    fn record(store: &MemoryStore, id: Uuid, n: u64, body: &[u8]) -> Result<(), StoreError> {
        store.apply(Op::Begin { id })?;
        store
            .apply(Op::Record {
                id,
                run: run(n),
                body: body.to_vec(),
            })
            .map(|_| ())
    }

    fn status(store: &MemoryStore, id: Uuid) -> GroupStatus {
        match store.apply(Op::Status { id }).unwrap() {
            Reply::Status(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn page(store: &MemoryStore, id: Uuid, list: RunList, from: u64, max: usize) -> Page {
        match store.apply(Op::Read {
            id,
            list,
            from,
            max,
        }) {
            Ok(Reply::Page(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_in_arrival_order_and_shares_equal_bodies() {
        let store = MemoryStore::new(StoreLimits::default());
        let id = create(&store, 0).unwrap();
        record(&store, id, 2, b"same").unwrap();
        record(&store, id, 1, b"same").unwrap();
        record(&store, id, 1, b"other").unwrap();
        let state = store.state.lock().unwrap();
        let runs = &state.groups[&id].runs;
        assert_eq!(
            runs.iter().map(|r| r.run_count).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert!(Arc::ptr_eq(&runs[0].data, &runs[1].data));
        assert_eq!(&*runs[2].data, b"other");
        drop(state);
        assert_eq!(
            record(&store, Uuid::nil(), 1, b""),
            Err(StoreError::UnknownGroup)
        );
        let p = page(&store, id, RunList::Server, 1, 1);
        assert_eq!((p.items, p.end), (1, false));
        assert!(p.json.starts_with(b"{\"run_id\""), "{:?}", p.json);
        let p = page(&store, id, RunList::Server, 2, 5);
        assert_eq!((p.items, p.end), (1, true));
    }

    #[test]
    fn limits_hold_and_delete_frees() {
        let store = MemoryStore::new(StoreLimits {
            max_groups: 1,
            max_runs: 2,
            ..StoreLimits::default()
        });
        let id = create(&store, 0).unwrap();
        assert!(
            matches!(create(&store, 0), Err(StoreError::Full(m)) if m.contains("--max-groups"))
        );
        record(&store, id, 1, b"").unwrap();
        record(&store, id, 2, b"").unwrap();
        assert!(
            matches!(store.apply(Op::Begin { id }), Err(StoreError::Full(m)) if m.contains("--max-runs"))
        );
        store.apply(Op::Delete { id }).unwrap();
        assert_eq!(store.state.lock().unwrap().total_runs, 0);
        assert!(create(&store, 0).is_ok());
    }

    #[test]
    fn groups_expire_after_their_ttl() {
        let store = MemoryStore::new(StoreLimits {
            max_groups: 1,
            group_ttl: 100,
            ..StoreLimits::default()
        });
        let old = create(&store, 1_000).unwrap();
        record(&store, old, 1, b"").unwrap();
        assert!(
            create(&store, 1_099).is_err(),
            "not yet expired: still full"
        );
        let new = create(&store, 1_100).unwrap();
        assert_eq!(
            store.apply(Op::Header { id: old }).unwrap_err(),
            StoreError::UnknownGroup
        );
        assert!(store.apply(Op::Header { id: new }).is_ok());
        assert_eq!(store.state.lock().unwrap().total_runs, 0);
    }

    #[test]
    fn a_run_is_in_progress_until_recorded_or_refused() {
        let store = MemoryStore::new(StoreLimits {
            max_groups: 1,
            max_runs: 1,
            ..StoreLimits::default()
        });
        let id = create(&store, 0).unwrap();
        store.apply(Op::Begin { id }).unwrap();
        store.apply(Op::Begin { id }).unwrap();
        assert_eq!(status(&store, id).runs_in_progress, 2);
        let rec = |n| {
            store.apply(Op::Record {
                id,
                run: run(n),
                body: Vec::new(),
            })
        };
        rec(1).unwrap();
        assert_eq!(status(&store, id).runs_in_progress, 1);
        assert!(rec(2).is_err(), "the store is full");
        assert_eq!(
            status(&store, id).runs_in_progress,
            0,
            "a refused run is no longer in progress"
        );
    }

    fn shard_page(from: u64, runs: &[&str], last: bool) -> ShardPage {
        ShardPage {
            shard: 1,
            shards: 3,
            from,
            runs: runs.iter().map(|r| r.as_bytes().into()).collect(),
            last,
        }
    }

    #[test]
    fn shard_pages_append_in_order_and_retries_change_nothing() {
        let store = MemoryStore::new(StoreLimits::default());
        let id = create(&store, 0).unwrap();
        let append = |page| store.apply(Op::AppendShard { id, page });
        assert!(matches!(
            append(shard_page(0, &["{\"a\":1}", "{\"a\":2}"], false)),
            Ok(Reply::Appended { runs: 2 })
        ));
        // The same page again: a retry.
        assert!(matches!(
            append(shard_page(0, &["{\"a\":1}", "{\"a\":2}"], false)),
            Ok(Reply::Appended { runs: 2 })
        ));
        assert!(matches!(
            append(shard_page(3, &["{}"], false)),
            Err(StoreError::Conflict(m)) if m.contains("holds 2 runs")
        ));
        let mut other = shard_page(2, &["{}"], false);
        other.shards = 4;
        assert!(matches!(append(other), Err(StoreError::Conflict(m)) if m.contains("one of 3")));
        assert!(matches!(
            append(shard_page(2, &["{\"a\":3}"], true)),
            Ok(Reply::Appended { runs: 3 })
        ));
        let s = status(&store, id);
        assert_eq!(
            s.shards,
            vec![ShardStatus {
                shard: 1,
                shards: 3,
                runs: 3,
                complete: true
            }]
        );
        let p = page(&store, id, RunList::Shard(1), 1, 10);
        assert_eq!(p.json, b"{\"a\":2},{\"a\":3}");
        assert!(matches!(
            store.apply(Op::Read {
                id,
                list: RunList::Shard(0),
                from: 0,
                max: 1
            }),
            Err(StoreError::UnknownShard)
        ));
    }
}
