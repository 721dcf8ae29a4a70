//! A hierarchical timer wheel with microsecond ticks.
//!
//! Every delay and timeout in conntest (server delays, client pacing, request,
//! upstream, idle and header timeouts) is an entry here. Eight levels of 64
//! slots cover about four years at one-microsecond resolution; level `L` slots
//! are `64^L` ticks wide. An entry lives in the lowest level where its tick
//! still shares every higher digit with the wheel's position, so the earliest
//! deadline is found from eight occupancy bitmaps, and entries of a higher
//! slot cascade to lower levels when the wheel reaches that slot.
//!
//! Entries sit in a slab and are linked into their slot's doubly linked list,
//! so insert, cancel and expire are O(1) and a cancelled timer leaves nothing
//! behind. The wheel never reads the clock: callers hand `now` in.
//! A timer never fires early: deadlines round up to the next microsecond
//! tick, so an entry fires at most 1 us after its exact nanosecond deadline.

use crate::event::clock::Nanos;
use slab::Slab;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 8;
const TICK_NS: Nanos = 1_000;
/// Ticks the wheel spans from its position; later deadlines are held to this.
const RANGE_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVELS - 1);
const NIL: u32 = u32::MAX;

/// Names one armed timer, to cancel it. Stale keys are harmless: the
/// generation tells a reused slab slot from the timer the key was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    deadline: Nanos,
    generation: u32,
    /// Index of the slot list the entry is linked into (`level * SLOTS + slot`).
    list: u16,
    prev: u32,
    next: u32,
    payload: T,
}

pub struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    heads: Vec<u32>,
    /// Slot lists are FIFO: timers with the same deadline fire in the order
    /// they were armed (runs held for the same delay answer in arrival order).
    tails: Vec<u32>,
    occupied: [u64; LEVELS],
    /// The wheel's position in ticks: every slot before it has been processed.
    elapsed: u64,
    next_generation: u32,
}

impl<T> TimerWheel<T> {
    pub fn new(now: Nanos) -> Self {
        TimerWheel {
            entries: Slab::new(),
            heads: vec![NIL; LEVELS * SLOTS],
            tails: vec![NIL; LEVELS * SLOTS],
            occupied: [0; LEVELS],
            elapsed: now / TICK_NS,
            next_generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Arms a timer that fires once `now >= deadline`.
    pub fn insert(&mut self, deadline: Nanos, payload: T) -> TimerKey {
        let max = (self.elapsed + RANGE_TICKS) * TICK_NS;
        let deadline = deadline.min(max);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let index = self.entries.insert(Entry {
            deadline,
            generation,
            list: 0,
            prev: NIL,
            next: NIL,
            payload,
        }) as u32;
        self.link(index);
        TimerKey { index, generation }
    }

    /// Disarms a timer, returning its payload if it had not fired yet.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        self.unlink(key.index);
        Some(self.entries.remove(key.index as usize).payload)
    }

    /// The deadline of a still armed timer.
    pub fn deadline(&self, key: TimerKey) -> Option<Nanos> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation).then_some(entry.deadline)
    }

    /// When the loop must next wake up: the earliest slot holding a timer.
    /// For the lowest level this is the deadline itself, rounded up to the
    /// microsecond; for a higher level it is the moment its slot cascades.
    pub fn next_wakeup(&self) -> Option<Nanos> {
        self.next_slot().map(|(_, _, tick)| tick * TICK_NS)
    }

    /// Fires every timer whose deadline is at or before `now`, in deadline
    /// order of their slots, appending the payloads to `fired`.
    pub fn poll(&mut self, now: Nanos, fired: &mut Vec<T>) {
        let now_tick = now / TICK_NS;
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now_tick {
                break;
            }
            self.elapsed = self.elapsed.max(start);
            let list = level * SLOTS + slot;
            let mut index = std::mem::replace(&mut self.heads[list], NIL);
            self.tails[list] = NIL;
            self.occupied[level] &= !(1u64 << slot);
            while index != NIL {
                let entry = &mut self.entries[index as usize];
                let next = entry.next;
                if entry.deadline <= now {
                    fired.push(self.entries.remove(index as usize).payload);
                } else {
                    self.link(index);
                }
                index = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
    }

    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS)
            .filter(|&level| self.occupied[level] != 0)
            .map(|level| {
                let slot = self.occupied[level].trailing_zeros() as usize;
                let shift = SLOT_BITS as usize * level;
                let level_start = self.elapsed & !((SLOTS as u64) << shift).wrapping_sub(1);
                (level, slot, level_start + ((slot as u64) << shift))
            })
            .min_by_key(|&(_, _, start)| start)
    }

    fn link(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let tick = entry.deadline.div_ceil(TICK_NS).max(self.elapsed);
        // The level is that of the highest digit where tick and position differ.
        let differing = (self.elapsed ^ tick) | (SLOTS as u64 - 1);
        let level = ((63 - differing.leading_zeros()) / SLOT_BITS) as usize;
        let level = level.min(LEVELS - 1);
        let slot = ((tick >> (SLOT_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize;
        let list = level * SLOTS + slot;
        let tail = self.tails[list];
        if tail == NIL {
            self.heads[list] = index;
        } else {
            self.entries[tail as usize].next = index;
        }
        self.tails[list] = index;
        let entry = &mut self.entries[index as usize];
        entry.list = list as u16;
        entry.prev = tail;
        entry.next = NIL;
        self.occupied[level] |= 1u64 << slot;
    }

    fn unlink(&mut self, index: u32) {
        let (list, prev, next) = {
            let e = &self.entries[index as usize];
            (e.list as usize, e.prev, e.next)
        };
        if prev == NIL {
            self.heads[list] = next;
            if next == NIL {
                self.occupied[list / SLOTS] &= !(1u64 << (list % SLOTS));
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tails[list] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::clock::{MILLISECOND, SECOND};

    const T0: Nanos = 1_000_000_000_123;

    fn drain(wheel: &mut TimerWheel<u32>, now: Nanos) -> Vec<u32> {
        let mut fired = Vec::new();
        wheel.poll(now, &mut fired);
        fired
    }

    #[test]
    fn fires_at_the_first_microsecond_at_or_after_the_deadline() {
        let mut wheel = TimerWheel::new(T0);
        let deadline = T0 + 1_500;
        wheel.insert(deadline, 1);
        assert!(drain(&mut wheel, deadline - 1).is_empty());
        let wake = wheel.next_wakeup().unwrap();
        assert!(wake >= deadline && wake - deadline < 1_000);
        assert!(drain(&mut wheel, wake - 1).is_empty());
        assert_eq!(drain(&mut wheel, wake), vec![1]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_poll() {
        let mut wheel = TimerWheel::new(T0);
        wheel.insert(T0 - 5_000, 7);
        assert_eq!(drain(&mut wheel, T0), vec![7]);
    }

    #[test]
    fn next_wakeup_is_the_rounded_deadline_at_level_zero() {
        let mut wheel = TimerWheel::new(T0);
        wheel.insert(T0 + 20_500, 1);
        assert_eq!(
            wheel.next_wakeup(),
            Some((T0 + 20_500).div_ceil(1_000) * 1_000)
        );
    }

    #[test]
    fn cascades_through_every_level_in_deadline_order() {
        let mut wheel = TimerWheel::new(T0);
        // Deadlines spread over microseconds to days, inserted out of order.
        let mut deadlines: Vec<Nanos> = (0..400u64)
            .map(|i| T0 + (i * 7919 % 400 + 1) * (1 + i * i * i * 1_000))
            .collect();
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, i as u32);
        }
        deadlines.sort();
        let mut now = T0;
        let mut seen = 0;
        // Walk time forward by following next_wakeup, as the loop does.
        while let Some(wake) = wheel.next_wakeup() {
            now = now.max(wake);
            for id in drain(&mut wheel, now) {
                let i = id as usize;
                let d = T0 + (i as u64 * 7919 % 400 + 1) * (1 + (i as u64).pow(3) * 1_000);
                assert!(d <= now, "fired early");
                assert!(now - d < 1_000, "fired late: {} ns", now - d);
                seen += 1;
            }
        }
        assert_eq!(seen, deadlines.len());
    }

    #[test]
    fn equal_deadlines_fire_in_the_order_armed_across_cascades() {
        for delay in [1_000, 3 * MILLISECOND, 70 * MILLISECOND, 2 * SECOND] {
            let mut wheel = TimerWheel::new(T0);
            for i in 0..20 {
                wheel.insert(T0 + 500 + delay, i);
            }
            let mut now = T0;
            let mut fired = Vec::new();
            while let Some(wake) = wheel.next_wakeup() {
                now = now.max(wake);
                fired.extend(drain(&mut wheel, now));
            }
            assert_eq!(fired, (0..20).collect::<Vec<_>>(), "delay {delay}");
        }
    }

    #[test]
    fn cancel_removes_and_stale_keys_do_nothing() {
        let mut wheel = TimerWheel::new(T0);
        let a = wheel.insert(T0 + MILLISECOND, 1);
        let b = wheel.insert(T0 + SECOND, 2);
        assert_eq!(wheel.cancel(a), Some(1));
        assert_eq!(wheel.cancel(a), None);
        // Reuse a's slab slot: the old key must not cancel the new timer.
        let c = wheel.insert(T0 + 2 * MILLISECOND, 3);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.deadline(c), Some(T0 + 2 * MILLISECOND));
        assert_eq!(drain(&mut wheel, T0 + SECOND), vec![3, 2]);
        assert_eq!(wheel.cancel(b), None);
    }

    #[test]
    fn cancel_in_the_middle_of_a_slot_list() {
        let mut wheel = TimerWheel::new(T0);
        let keys: Vec<_> = (0..5).map(|i| wheel.insert(T0 + 10_000, i)).collect();
        wheel.cancel(keys[2]);
        wheel.cancel(keys[0]);
        wheel.cancel(keys[4]);
        let mut fired = drain(&mut wheel, T0 + 11_000);
        fired.sort();
        assert_eq!(fired, vec![1, 3]);
    }

    #[test]
    fn big_jump_fires_everything_due_and_keeps_the_rest() {
        let mut wheel = TimerWheel::new(T0);
        for i in 0..1000u32 {
            wheel.insert(T0 + i as u64 * 3 * MILLISECOND, i);
        }
        let fired = drain(&mut wheel, T0 + 1_500 * MILLISECOND);
        assert_eq!(fired.len(), 501);
        assert!(fired.iter().all(|&i| i <= 500));
        assert_eq!(wheel.len(), 499);
        let rest = drain(&mut wheel, T0 + 3 * SECOND);
        assert_eq!(rest.len(), 499);
    }

    #[test]
    fn far_future_is_held_within_range() {
        let mut wheel = TimerWheel::new(T0);
        let key = wheel.insert(u64::MAX, 1);
        let held = wheel.deadline(key).unwrap_or(0);
        assert!(held > T0 + 365 * 24 * 3600 * SECOND);
        assert!(drain(&mut wheel, held - 1).is_empty());
        assert_eq!(drain(&mut wheel, held), vec![1]);
    }
}
