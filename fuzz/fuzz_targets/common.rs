//! Shared by the fuzz targets: how an input is read as a configuration
//! header plus a payload, and how the payload is cut into pieces.
//!
//! Input layout: `[flags, max_piece, seed_lo, seed_hi, payload...]`.
//! `flags` picks limits and modes (each target reads its own bits),
//! `max_piece` bounds the length of each piece fed (0 feeds byte by byte),
//! and the seed drives the choice of every split point, so the fuzzer
//! controls the splits as well as the bytes.

#![allow(dead_code)]

pub const HEADER: usize = 4;

pub struct Input<'a> {
    pub flags: u8,
    pub max_piece: usize,
    pub seed: u16,
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        if data.len() < HEADER {
            return None;
        }
        Some(Input {
            flags: data[0],
            max_piece: data[1] as usize + 1,
            seed: u16::from_le_bytes([data[2], data[3]]),
            payload: &data[HEADER..],
        })
    }

    pub fn rng(&self) -> Rng {
        Rng::new(self.seed as u64)
    }

    /// `bytes` (the payload or a part of it) cut at the split points the
    /// seed picks; now and then an empty piece, which must change nothing.
    pub fn pieces<'b>(&self, bytes: &'b [u8]) -> Vec<&'b [u8]> {
        let mut rng = Rng::new(self.seed as u64 ^ 0x5eed);
        let mut rest = bytes;
        let mut out = Vec::new();
        while !rest.is_empty() {
            if rng.below(8) == 0 {
                out.push(&rest[..0]);
            }
            let n = (1 + rng.below(self.max_piece)).min(rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }
}

/// wyrand: tiny and good enough to pick split points.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.0 as u128).wrapping_mul((self.0 ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) ^ t) as u64
    }

    /// Uniform-ish in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
