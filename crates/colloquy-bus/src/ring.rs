//! Which member of a group consumes which partition: a consistent-hash ring
//! with a fixed number of virtual nodes per member.
//!
//! A user's messages live in one partition ([`partition_for`] of the user
//! id), and a partition is owned by the first virtual node at or after the
//! partition's point on the ring, so ownership of users follows the ring.
//! When a member joins or leaves, only the partitions between its virtual
//! nodes and their predecessors move; everything else stays where it was,
//! which keeps a rebalance short (no cold states, no redelivery) for the
//! members that are not involved.
//!
//! Every member computes the same ring from the same member list, so no
//! coordinator is needed beyond agreeing on who is a member.
//!
//! [`partition_for`]: crate::partition_for

use std::collections::BTreeMap;

/// Virtual nodes per member unless configured otherwise.
pub const DEFAULT_VNODES: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// (point, member index), sorted by point.
    points: Vec<(u64, usize)>,
    members: Vec<String>,
}

impl Ring {
    /// A ring of `members` (order and duplicates do not matter) with
    /// `vnodes` virtual nodes each.
    pub fn new<S: AsRef<str>>(members: &[S], vnodes: u32) -> Ring {
        let mut members: Vec<String> = members.iter().map(|m| m.as_ref().to_string()).collect();
        members.sort();
        members.dedup();
        let mut points: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .flat_map(|(i, m)| (0..vnodes.max(1)).map(move |v| (point(&format!("{m}#{v}")), i)))
            .collect();
        // Ties (astronomically unlikely) break by member name, so every
        // member still computes the same ring.
        points.sort_unstable();
        Ring { points, members }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The member owning `partition`; `None` for an empty ring.
    pub fn owner(&self, partition: u32) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let at = point(&format!("partition-{partition}"));
        let i = self.points.partition_point(|(p, _)| *p < at);
        let (_, member) = self.points[i % self.points.len()];
        Some(&self.members[member])
    }

    /// The partitions of a topic with `partitions` partitions that `member`
    /// owns, ascending.
    pub fn partitions_of(&self, member: &str, partitions: u32) -> Vec<u32> {
        (0..partitions)
            .filter(|p| self.owner(*p) == Some(member))
            .collect()
    }

    /// Every member's partitions.
    pub fn assignment(&self, partitions: u32) -> BTreeMap<String, Vec<u32>> {
        let mut out: BTreeMap<String, Vec<u32>> = self
            .members
            .iter()
            .map(|m| (m.clone(), Vec::new()))
            .collect();
        for p in 0..partitions {
            if let Some(owner) = self.owner(p) {
                out.get_mut(owner).expect("owner is a member").push(p);
            }
        }
        out
    }
}

/// A point on the ring: 64-bit FNV-1a, then the SplitMix64 finalizer so
/// that names differing in one trailing digit land far apart. Stable by
/// construction: ownership must not change between releases.
fn point(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner_and_all_agree() {
        let a = Ring::new(&["w1", "w2", "w3"], DEFAULT_VNODES);
        let b = Ring::new(&["w3", "w1", "w2", "w1"], DEFAULT_VNODES);
        assert_eq!(a, b, "member order and duplicates do not matter");
        let assignment = a.assignment(64);
        let mut all: Vec<u32> = assignment.values().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        for (member, parts) in &assignment {
            assert_eq!(&a.partitions_of(member, 64), parts);
        }
    }

    #[test]
    fn load_is_spread_over_members() {
        let ring = Ring::new(&["w1", "w2", "w3", "w4"], DEFAULT_VNODES);
        for (member, parts) in ring.assignment(256) {
            assert!(
                (32..=96).contains(&parts.len()),
                "{member} owns {} of 256 partitions",
                parts.len()
            );
        }
    }

    #[test]
    fn a_join_moves_partitions_only_to_the_newcomer() {
        let before = Ring::new(&["w1", "w2"], DEFAULT_VNODES);
        let after = Ring::new(&["w1", "w2", "w3"], DEFAULT_VNODES);
        let mut moved = 0;
        for p in 0..256 {
            let (old, new) = (before.owner(p).unwrap(), after.owner(p).unwrap());
            if old != new {
                assert_eq!(new, "w3", "partition {p} moved from {old} to {new}");
                moved += 1;
            }
        }
        assert!(moved > 0 && moved < 160, "{moved} of 256 partitions moved");
        // A leave is the same change backwards.
        for p in 0..256 {
            if after.owner(p) != Some("w3") {
                assert_eq!(after.owner(p), before.owner(p));
            }
        }
    }

    #[test]
    fn an_empty_ring_owns_nothing() {
        let ring = Ring::new::<&str>(&[], DEFAULT_VNODES);
        assert_eq!(ring.owner(0), None);
        assert!(ring.assignment(8).is_empty());
    }
}
