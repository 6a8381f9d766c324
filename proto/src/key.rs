//! `demarc-key-v1`, the packet key, and consistent (hash-based) sampling.
//! Specified in `docs/architecture.md`; the C twin is in
//! `ebpf/include/demarc_parse.h`; `ebpf/testdata/vectors.json` pins both.

/// Bytes of the payload that enter the hash (the length always does).
pub const KEY_PREFIX_BYTES: usize = 64;

const K1: u64 = 0x87c3_7b91_1142_53d5;
const K2: u64 = 0x4cf5_ad43_2745_937f;
const SEED: u64 = 0x646d_7263_6b65_7931; // "dmrckey1"

/// The key of an inner payload: a hash of its length and first 64 bytes.
pub fn packet_key(payload: &[u8]) -> u64 {
    // The C side holds the length in a u32; UDP payloads never come near 2^32.
    let n = u64::from(payload.len() as u32);
    let m = payload.len().min(KEY_PREFIX_BYTES);
    let mut buf = [0u8; KEY_PREFIX_BYTES];
    buf[..m].copy_from_slice(&payload[..m]);

    let mut h = SEED ^ n;
    for chunk in buf.chunks_exact(8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        let k = w.wrapping_mul(K1).rotate_left(31).wrapping_mul(K2);
        h ^= k;
        h = h.rotate_left(27).wrapping_mul(5).wrapping_add(0x52dc_e729);
    }
    h ^= n;
    fmix64(h)
}

/// MurmurHash3's 64-bit finaliser.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// A sampling rate outside (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("sampling rate {0} is not in (0, 1]")]
pub struct SampleRateError(pub f64);

/// The threshold for [`is_sampled`]: `floor(rate × 2^32)`, so rate 1.0 gives
/// 2^32 and keeps every packet (and rates below 2^-32 keep none).
pub fn sample_threshold(rate: f64) -> Result<u64, SampleRateError> {
    // Written so that NaN fails too.
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(SampleRateError(rate));
    }
    // Exact: rate × 2^32 only shifts the exponent, and the result is ≤ 2^32.
    Ok((rate * 4_294_967_296.0).floor() as u64)
}

/// RFC 5475 hash-based selection: the same decision on every probe.
pub fn is_sampled(key: u64, threshold: u64) -> bool {
    (key >> 32) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from an independent implementation (a throwaway Python script
    // written from the spec text in docs/architecture.md), so a shared mistake
    // in reading the spec is less likely to hide here.
    #[test]
    fn key_matches_independent_implementation() {
        let seq: Vec<u8> = (0..=255u8).collect();
        let cases: &[(&[u8], u64)] = &[
            (b"", 0x3cda_c1c0_8167_0bb0),
            (b"\x80", 0xc2f3_5c5e_4dc5_df98),
            (&seq[..12], 0xee08_5df8_a2fa_cddb),
            (&seq[..63], 0x77b1_4295_475b_bd0b),
            (&seq[..64], 0x8d1f_87d9_07b0_e2e8),
            (&seq[..65], 0xf7d1_5d69_f366_1be9),
            (&seq[..200], 0xc095_8096_7562_5afa),
        ];
        for (i, &(payload, want)) in cases.iter().enumerate() {
            assert_eq!(packet_key(payload), want, "case {i}: len {}", payload.len());
        }
    }

    #[test]
    fn key_covers_only_the_first_64_bytes_and_the_length() {
        let mut a = [7u8; 100];
        let mut b = a;
        b[64..].fill(9);
        assert_eq!(packet_key(&a), packet_key(&b));
        a[63] = 8;
        assert_ne!(packet_key(&a), packet_key(&b));
        // Zero padding is not the same as real zero bytes: the length differs.
        assert_ne!(packet_key(&[1, 0]), packet_key(&[1]));
        assert_ne!(packet_key(&[0; 64]), packet_key(&[0; 65]));
    }

    #[test]
    fn thresholds() {
        assert_eq!(sample_threshold(1.0), Ok(1 << 32));
        assert_eq!(sample_threshold(0.5), Ok(1 << 31));
        assert_eq!(sample_threshold(0.25), Ok(1 << 30));
        assert_eq!(sample_threshold(0.1), Ok(429_496_729));
        assert_eq!(sample_threshold(f64::MIN_POSITIVE), Ok(0));
        for bad in [0.0, -0.1, 1.000_000_1, f64::NAN, f64::INFINITY] {
            assert!(sample_threshold(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sampling_uses_the_upper_half() {
        let all = sample_threshold(1.0).unwrap();
        assert!(is_sampled(u64::MAX, all));
        let half = sample_threshold(0.5).unwrap();
        assert!(is_sampled(0x7fff_ffff_ffff_ffff, half));
        assert!(!is_sampled(0x8000_0000_0000_0000, half));
        // The lower half of the key does not matter.
        assert!(is_sampled(0x7fff_ffff_0000_0000, half));
        assert!(!is_sampled(0x8000_0000_ffff_ffff, half));
        assert!(is_sampled(0x0000_0000_ffff_ffff, 1));
        assert!(!is_sampled(0x0000_0001_0000_0000, 1));
    }

    #[test]
    fn sampled_share_is_close_to_the_rate() {
        let threshold = sample_threshold(0.1).unwrap();
        let kept = (0u32..20_000)
            .filter(|i| is_sampled(packet_key(&i.to_be_bytes()), threshold))
            .count();
        // 2000 expected; ±5 σ (σ ≈ 42) for a hash that behaves like a random one.
        assert!((1790..=2210).contains(&kept), "{kept}");
    }
}
