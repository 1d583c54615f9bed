//! The seeded randomness handed to foca.
//!
//! foca draws random members to probe and gossip to through `rand`'s
//! `RngExt`, which it gets for any `rand_core` 0.10 generator. [`SeededRng`]
//! adapts the overlay's seeded [`overlay::rng::Rng`] (xoshiro256**), so one
//! seed replays every choice foca makes; nothing here reads ambient entropy.

use core::convert::Infallible;

/// A `rand_core` generator over the overlay's seeded PRNG.
#[derive(Clone, Debug)]
pub struct SeededRng(overlay::rng::Rng);

impl SeededRng {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng(overlay::rng::Rng::new(seed))
    }

    /// A value uniformly in `[0, n)`; `n` must be non-zero.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
}

impl rand_core_010::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core_010::Rng;

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (SeededRng::new(9), SeededRng::new(9));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
