//! Randomness for masking keys and `Sec-WebSocket-Key`.
//!
//! In WebAssembly the bytes come from the host's `crypto.getRandomValues` (Node ≥ 19 and every
//! browser have it on `globalThis`), fetched 256 bytes at a time so that masking a frame
//! rarely crosses into JavaScript. Host builds (unit tests, doctests) have no JavaScript to ask
//! and use a generator keyed by the standard library's per-process random hash keys.

use duplex_core::RandomSource;

/// Bytes fetched from the host per refill: 64 masking keys.
const POOL: usize = 256;

/// The source a [`crate::WsConnection`] uses unless one is injected.
pub fn default_source() -> RandomSource {
    let mut pool = [0u8; POOL];
    let mut used = POOL;
    Box::new(move |buf: &mut [u8]| {
        for byte in buf {
            if used == POOL {
                fill(&mut pool);
                used = 0;
            }
            *byte = pool[used];
            // Each byte is handed out once.
            pool[used] = 0;
            used += 1;
        }
    })
}

#[cfg(target_arch = "wasm32")]
mod host {
    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        /// `crypto.getRandomValues(view)`, filling a view of the module's memory in place.
        #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
        fn get_random_values(buf: &mut [u8]);
    }

    pub fn fill(buf: &mut [u8]) {
        get_random_values(buf);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// SipHash keyed with the process's random keys, over a counter.
    pub fn fill(buf: &mut [u8]) {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let keys = KEYS.get_or_init(RandomState::new);
        for chunk in buf.chunks_mut(8) {
            let word = keys.hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }
}

use host::fill;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_refills_and_bytes_vary() {
        let mut random = default_source();
        let mut seen = std::collections::HashSet::new();
        // Several refills' worth of 4-byte keys: no key repeats in practice.
        for _ in 0..(3 * POOL / 4) {
            let mut key = [0u8; 4];
            random(&mut key);
            seen.insert(key);
        }
        assert!(
            seen.len() > 3 * POOL / 4 - 2,
            "{} distinct keys",
            seen.len()
        );
    }
}
