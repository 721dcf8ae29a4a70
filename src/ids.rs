//! Fast random UUID v4s for run ids and default run bodies.
//!
//! `Uuid::new_v4` asks the kernel for randomness on every call; a run id
//! needs uniqueness, not secrecy, so a wyrand generator seeded once from the
//! kernel makes them without a syscall on the hot path.

use uuid::Uuid;

pub struct IdGen {
    state: u64,
}

impl IdGen {
    pub fn new() -> IdGen {
        let seed = Uuid::new_v4().as_u128();
        IdGen {
            state: (seed as u64) ^ ((seed >> 64) as u64),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }

    pub fn uuid(&mut self) -> Uuid {
        let hi = u128::from(self.next_u64()) << 64;
        let bytes = (hi | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_distinct_v4_uuids() {
        let mut ids = IdGen::new();
        let all: std::collections::HashSet<Uuid> = (0..10_000).map(|_| ids.uuid()).collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(|u| u.get_version_num() == 4));
    }
}
