//! State keys: `[key group: u16 BE][org_id][0x00][entity id]`. Sorting by key group first puts
//! each org's state in one contiguous range that can be found, copied or dropped by prefix.

use crate::murmur2::{murmur2, to_positive};
use p2p_processors::OrgId;

/// Number of key groups. Fixed forever: changing it moves every key. Any partition count that
/// divides it (1, 2, 4, ... 1024) owns whole key groups.
pub const KEY_GROUPS: u32 = 1024;

/// A stable hash slot of an org, consistent with the Java partitioner: for a partition count
/// `p` dividing [`KEY_GROUPS`], `partition = key_group % p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(u16);

impl KeyGroup {
    pub fn of(org: &OrgId) -> Self {
        Self::of_bytes(org.as_str().as_bytes())
    }

    fn of_bytes(org: &[u8]) -> Self {
        Self((to_positive(murmur2(org)) % KEY_GROUPS) as u16)
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// The partition this key group falls in when the topic has `partitions` partitions and
    /// `partitions` divides [`KEY_GROUPS`].
    pub fn partition(self, partitions: u32) -> u32 {
        u32::from(self.0) % partitions
    }
}

/// The owner (the org, in P2P) a raw store key belongs to, whose bytes the partitioner hashes:
/// a state key's own, a timer's its owner's. `None` for
/// anything else (the store's own bookkeeping).
pub fn owner_of_raw_key(key: &[u8]) -> Option<&[u8]> {
    let state_key = match key.first()? {
        0..=3 => key,
        &crate::timers::TIMER_PREFIX => {
            let len = u16::from_be_bytes(key.get(9..11)?.try_into().ok()?) as usize;
            key.get(11..11 + len)?
        }
        _ => return None,
    };
    let rest = state_key.get(2..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

/// An encoded state key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey(Vec<u8>);

impl StateKey {
    /// The key of `entity` (e.g. a PO id) of `org`.
    pub fn new(org: &OrgId, entity: &str) -> Self {
        let org = org.as_str().as_bytes();
        let mut bytes = Vec::with_capacity(2 + org.len() + 1 + entity.len());
        bytes.extend_from_slice(&KeyGroup::of_bytes(org).0.to_be_bytes());
        bytes.extend_from_slice(org);
        bytes.push(0);
        bytes.extend_from_slice(entity.as_bytes());
        Self(bytes)
    }

    /// The prefix shared by every key of `org`.
    pub fn org_prefix(org: &OrgId) -> Vec<u8> {
        let org = org.as_str().as_bytes();
        let mut bytes = KeyGroup::of_bytes(org).0.to_be_bytes().to_vec();
        bytes.extend_from_slice(org);
        bytes.push(0);
        bytes
    }

    /// Rebuilds a key from its bytes (as stored inside a timer key); `None` if too short to
    /// hold a key group.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() >= 3).then_some(Self(bytes))
    }

    pub fn key_group(&self) -> KeyGroup {
        KeyGroup(u16::from_be_bytes([self.0[0], self.0[1]]))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::murmur2::partition_for;

    #[test]
    fn a_key_begins_with_the_orgs_key_group_and_its_org_prefix() {
        let org = OrgId::from_u128(42);
        let key = StateKey::new(&org, "po_1");
        assert_eq!(key.key_group(), KeyGroup::of(&org));
        assert!(key.as_bytes().starts_with(&StateKey::org_prefix(&org)));
    }

    #[test]
    fn the_key_group_falls_in_the_partition_the_java_client_picks() {
        for n in 0..500u128 {
            let org = OrgId::from_u128(n * 7919);
            for partitions in [1, 2, 4, 8, 16, 64, 1024] {
                assert_eq!(
                    KeyGroup::of(&org).partition(partitions),
                    partition_for(org.as_str().as_bytes(), partitions)
                );
            }
        }
    }

    #[test]
    fn one_orgs_keys_never_share_a_prefix_with_an_org_whose_id_extends_it() {
        // The 0x00 separator keeps "org_a" from being a prefix of "org_ab"'s keys.
        let a = OrgId::from_u128(1);
        let key = StateKey::new(&a, "x");
        let prefix = StateKey::org_prefix(&a);
        assert_eq!(key.as_bytes()[prefix.len() - 1], 0);
    }
}
