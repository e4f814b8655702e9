//! Hop processing and reply recovery write into the caller's packet and allocate nothing.
//!
//! A counting global allocator (test-only `unsafe`: it only forwards to the system allocator)
//! counts allocations made by this thread while a packet is processed.

#![allow(unsafe_code, clippy::unwrap_used, reason = "test-only counting allocator")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mix_sphinx::{
    Action, AddressBlock, Hop, MESSAGE_SIZE, NodeSecretKey, Padding, PayloadCipher, Route,
    WireFormat,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-local counter
// is a plain `Cell` with a const initialiser, so touching it does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn processing_a_packet_allocates_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for cipher in [PayloadCipher::Lioness, PayloadCipher::AesCtr] {
        let format = WireFormat::new(cipher, Padding::Plain);
        let keys: Vec<_> = (0..3).map(|_| NodeSecretKey::generate(&mut rng)).collect();
        let route = Route::new(
            keys.iter()
                .map(|k| Hop {
                    public_key: k.public_key(),
                    address: AddressBlock::from_bytes([7; 94]),
                })
                .collect(),
            vec![5, 5],
        )
        .unwrap();
        // The counter works: building a packet allocates its buffer.
        let (n, packet) = allocations_during(|| {
            route.forward_packet(&format, &AddressBlock::ZERO, &[3; MESSAGE_SIZE], &mut rng)
        });
        assert!(n >= 1);
        let mut packet = packet.unwrap();
        for key in &keys {
            let (n, result) = allocations_during(|| key.process(&format, &mut packet));
            assert_eq!(n, 0, "{cipher:?}: {n} allocations in one hop");
            assert!(result.is_ok());
        }

        let (surb, secrets) = route.surb(&format, &mut rng).unwrap();
        let mut reply = surb.reply_packet(&format, &[9; MESSAGE_SIZE]);
        for key in &keys {
            let (n, result) = allocations_during(|| key.process(&format, &mut reply));
            assert_eq!(n, 0);
            if let Ok((_, Action::Reply { .. })) = result {
                let (n, m) =
                    allocations_during(|| secrets.recover(&format, &mut reply).map(|m| m[0]));
                assert_eq!((n, m), (0, Ok(9)));
            }
        }
    }
}
