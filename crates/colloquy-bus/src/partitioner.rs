//! Key → partition, fixed forever: a key must land on the same partition
//! after a restart, an upgrade, or a move to Kafka, or per-key order breaks.
//! The hash is Kafka's own (the Java client's default partitioner, and
//! librdkafka's `murmur2_random` for non-empty keys), so a Kafka topic fed
//! by other producers agrees with us too.

/// Kafka's 32-bit murmur2 (seed `0x9747b28c`), bit for bit.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka mixes the length in as a Java int; keys beyond 2 GiB are not a
    // concern, the truncation only mirrors that.
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` in a topic of `partitions` partitions (> 0):
/// `(murmur2(key) & 0x7fffffff) % partitions`, as Kafka computes it.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        assert_eq!(partition_for("user-42", 1), 0);
        for n in 1..20 {
            assert!(partition_for("user-42", n) < n);
        }
        assert_eq!(
            partition_for("21", 16),
            (-973_932_308i32 as u32 & 0x7fff_ffff) % 16
        );
    }
}
