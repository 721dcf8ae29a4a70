//! A run list streamed from the store page by page: a million-run group
//! never sits whole in memory as text, and a store that answers later
//! (Redis) never makes the loop wait.
//!
//! The stream asks the store for one page at a time. The memory store
//! answers at once; a later answer reaches the connection's [`Mailbox`]
//! through the loop (the ticket names the connection), and the loop
//! services the connection, which asks the stream again.

use crate::http::server::BodySource;
use crate::store::{Inbox, Op, Reply, RunList, Store, StoreError, Ticket};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Runs per page.
pub const RUNS_PER_PAGE: usize = 256;

/// Tickets with this bit name a connection's stream, not a waiting request.
const STREAM_BIT: u64 = 1 << 63;

/// The ticket of connection `key`'s streams (checked against `serial`).
pub fn ticket(key: usize, serial: u64) -> Ticket {
    STREAM_BIT | ((key as u64 & 0x7fff_ffff) << 32) | (serial & 0xffff_ffff)
}

/// The connection key and serial a stream ticket names, if it is one.
pub fn connection_of(ticket: Ticket) -> Option<(usize, u64)> {
    (ticket & STREAM_BIT != 0).then_some((
        ((ticket >> 32) & 0x7fff_ffff) as usize,
        ticket & 0xffff_ffff,
    ))
}

/// Whether `serial` is the connection a ticket's serial names.
pub fn same_serial(ticket_serial: u64, serial: u64) -> bool {
    ticket_serial == serial & 0xffff_ffff
}

/// The page a connection's stream waits for. A connection streams one
/// answer at a time (answers go out in order), so one slot is enough.
#[derive(Default)]
pub struct Mailbox(Mutex<Option<Reply>>);

impl Mailbox {
    pub fn put(&self, reply: Reply) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reply);
    }

    fn take(&self) -> Option<Reply> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What a stream needs to ask the store.
pub struct StreamCtx {
    pub store: Store,
    pub inbox: Arc<Inbox>,
    pub ticket: Ticket,
    pub mailbox: Arc<Mailbox>,
}

pub struct StoreStream {
    ctx: StreamCtx,
    id: Uuid,
    list: RunList,
    /// Written before the first run.
    head: Option<Vec<u8>>,
    next: u64,
    /// A page was asked for and has not come.
    waiting: bool,
    failed: bool,
}

impl StoreStream {
    pub fn new(ctx: StreamCtx, id: Uuid, list: RunList, head: Vec<u8>) -> StoreStream {
        StoreStream {
            ctx,
            id,
            list,
            head: Some(head),
            next: 0,
            waiting: false,
            failed: false,
        }
    }

    fn next_page(&mut self) -> Option<Reply> {
        if self.waiting {
            let reply = self.ctx.mailbox.take()?;
            self.waiting = false;
            return Some(reply);
        }
        let op = Op::Read {
            id: self.id,
            list: self.list,
            from: self.next,
            max: RUNS_PER_PAGE,
        };
        let reply = self.ctx.store.submit(op, self.ctx.ticket, &self.ctx.inbox);
        self.waiting = reply.is_none();
        reply
    }
}

impl BodySource for StoreStream {
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        let Some(reply) = self.next_page() else {
            return false;
        };
        match reply {
            Reply::Page(page) => {
                if page.items > 0 {
                    if self.next > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&page.json);
                    self.next += page.items as u64;
                }
                if page.end {
                    out.extend_from_slice(b"]}\n");
                }
                page.end
            }
            // Deleted (or expired) while being sent: close the JSON so it
            // stays valid; the group is gone either way.
            Reply::Error(StoreError::UnknownGroup) => {
                out.extend_from_slice(b"]}\n");
                true
            }
            // The store failed mid-answer: a short record would read as
            // lost runs, so the answer is cut off instead.
            other => {
                crate::warn!("streaming group {}: the store answered {other:?}", self.id);
                self.failed = true;
                true
            }
        }
    }

    fn failed(&self) -> bool {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_name_their_connection() {
        let t = ticket(12_345, 7);
        assert_eq!(connection_of(t), Some((12_345, 7)));
        assert_eq!(connection_of(12_345), None, "a request's ticket");
        let (_, serial) = connection_of(ticket(1, (1 << 32) + 5)).unwrap();
        assert!(same_serial(serial, (1 << 32) + 5));
        assert!(!same_serial(serial, 5 + (1 << 33) + 1));
    }
}
