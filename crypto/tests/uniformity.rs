//! Must-show 5: a masked vector is indistinguishable from uniform. Chi-square over the
//! 256 byte values of the masked vector of an all-zeros input and of a constant input
//! (1M u32 each) stays below the df = 255 critical value at α = 0.001; the same test on
//! the unmasked inputs exceeds it by far (so the test can fail).

mod common;

use std::collections::BTreeMap;

use common::{random_vec, Federation};
use fedsilo_crypto::encoding::{Modulus, RingVec};
use fedsilo_crypto::msg::{ClientMsg, RoundConfig, RoundContext};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// χ²_{0.999}(255) (upper 0.1 % point of the chi-square distribution with 255 degrees of
/// freedom).
const CRITICAL: f64 = 330.52;
const LEN: usize = 1_000_000;

fn chi_square(bytes: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let expected = bytes.len() as f64 / 256.0;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn masked_inputs_look_uniform_and_unmasked_ones_do_not() {
    let mut rng = ChaCha20Rng::seed_from_u64(2024);
    let mut graph_seed = [0u8; 32];
    rng.fill_bytes(&mut graph_seed);
    let participants = vec![1, 2, 3];
    let config = RoundConfig {
        ctx: RoundContext {
            job_id: "uniformity".into(),
            round: 0,
        },
        participants: participants.clone(),
        neighbours: 2,
        threshold: 2,
        vector_len: LEN,
        modulus: Modulus::Pow32,
        graph_seed,
    };
    let zeros = RingVec::zeros(Modulus::Pow32, LEN);
    let constant = RingVec::U32(vec![0xDEAD_BEEF; LEN]);
    let inputs = BTreeMap::from([
        (1, zeros.clone()),
        (2, constant.clone()),
        (3, random_vec(&mut rng, Modulus::Pow32, LEN)),
    ]);
    let mut fed = Federation::with_inputs(config, inputs, rng);
    fed.start();
    let out = fed.run().expect("round succeeds");
    fed.assert_exact(&out);

    let masked = |id| {
        fed.delivered
            .iter()
            .find_map(|(from, m)| match m {
                ClientMsg::MaskedInput(mi) if *from == id => Some(mi.masked.to_le_bytes()),
                _ => None,
            })
            .expect("masked input delivered")
    };
    let (masked_zeros, masked_constant) = (masked(1), masked(2));
    assert_eq!(masked_zeros.len(), 4 * LEN);

    let stats = [
        ("masked zeros", chi_square(&masked_zeros)),
        ("masked constant", chi_square(&masked_constant)),
        ("unmasked zeros", chi_square(&zeros.to_le_bytes())),
        ("unmasked constant", chi_square(&constant.to_le_bytes())),
    ];
    for (what, s) in &stats {
        println!("chi-square {what}: {s:.1} (critical {CRITICAL})");
    }
    assert!(stats[0].1 < CRITICAL, "{}: {}", stats[0].0, stats[0].1);
    assert!(stats[1].1 < CRITICAL, "{}: {}", stats[1].0, stats[1].1);
    assert!(stats[2].1 > CRITICAL, "the test must be able to fail");
    assert!(stats[3].1 > CRITICAL, "the test must be able to fail");

    // Also per byte lane of the u32 (a bias in one lane would hide in the pooled count).
    for lane in 0..4 {
        let bytes: Vec<u8> = masked_zeros.iter().skip(lane).step_by(4).copied().collect();
        let s = chi_square(&bytes);
        assert!(s < CRITICAL, "lane {lane}: {s}");
    }
}

/// The statistic itself: a slightly biased source (every 64th byte forced to 0) is
/// detected, a uniform one is not.
#[test]
fn chi_square_detects_a_small_bias() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut bytes = vec![0u8; 4 * LEN];
    rng.fill_bytes(&mut bytes);
    assert!(chi_square(&bytes) < CRITICAL);
    for b in bytes.iter_mut().step_by(64) {
        *b = 0;
    }
    assert!(chi_square(&bytes) > CRITICAL);
}
