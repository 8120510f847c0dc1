//! The group's assignment as the broker keeps it: which partitions of the inputs it leaves to
//! no member. A worker sees only its own share, and a static member restarted after a growth
//! is handed back the share the group had before it (the broker does not rebalance for a
//! static member's rejoin, nor for a follower's new metadata): the growth tests found the new
//! partitions assigned to nobody for good, every member content with its share (issue 25).
//!
//! rdkafka hands a member's assignment over as the consumer protocol's bytes; decoding them is
//! the few lines below (the `kafka-protocol` crate would bring a whole protocol codec for it).

use rdkafka::consumer::Consumer;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// A member's assignment (ConsumerProtocolAssignment, any version) that does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a member's assignment does not decode: {0}")]
pub struct UndecodableAssignment(&'static str);

/// The topics and partitions in a member's assignment: an int16 version, then an array of
/// (string topic, array of int32 partitions); the user data after them is not read. Every
/// version of the consumer protocol so far (0 to 3) starts so, none of them flexible.
pub fn decode_member_assignment(
    bytes: &[u8],
) -> Result<Vec<(String, Vec<i32>)>, UndecodableAssignment> {
    let mut reader = Reader(bytes);
    if bytes.is_empty() {
        return Ok(Vec::new()); // a member given nothing (or not yet synced)
    }
    reader.take::<2>("the version")?;
    let topics = reader.length("the topic count")?;
    let mut assigned = Vec::with_capacity(topics.min(1_024));
    for _ in 0..topics {
        let name_length = i16::from_be_bytes(reader.take::<2>("a topic name's length")?);
        let name_length = usize::try_from(name_length)
            .map_err(|_| UndecodableAssignment("a topic name of negative length"))?;
        let name = reader.slice(name_length, "a topic name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| UndecodableAssignment("a topic name not in UTF-8"))?
            .to_owned();
        let count = reader.length("a partition count")?;
        let mut partitions = Vec::with_capacity(count.min(65_536));
        for _ in 0..count {
            partitions.push(i32::from_be_bytes(reader.take::<4>("a partition")?));
        }
        assigned.push((name, partitions));
    }
    Ok(assigned)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], UndecodableAssignment> {
        if self.0.len() < n {
            return Err(UndecodableAssignment(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn take<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], UndecodableAssignment> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(N, what)?);
        Ok(out)
    }

    /// An array's int32 length; -1 (null) reads as empty.
    fn length(&mut self, what: &'static str) -> Result<usize, UndecodableAssignment> {
        let length = i32::from_be_bytes(self.take::<4>(what)?);
        Ok(usize::try_from(length).unwrap_or(0))
    }
}

/// The partitions of `counts`' topics that `assigned` (every member's share) leaves to no
/// member.
pub fn unassigned(
    counts: &HashMap<String, i32>,
    assigned: &[(String, Vec<i32>)],
) -> BTreeSet<(String, i32)> {
    let given: BTreeSet<(&str, i32)> = assigned
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic.as_str(), *p)))
        .collect();
    counts
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(move |p| (topic, p)))
        .filter(|(topic, p)| !given.contains(&(topic.as_str(), *p)))
        .map(|(topic, p)| (topic.clone(), p))
        .collect()
}

/// What the broker says of `group`'s assignment.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupAssignment {
    /// Stable, every member's share known: the partitions of the inputs given to nobody.
    Stable { unassigned: BTreeSet<(String, i32)> },
    /// Rebalancing, not listed, or a share that does not decode: nothing to conclude.
    Unknown,
}

/// Asks the broker for `group`'s members and their shares (DescribeGroups), and compares
/// them with the inputs' partition `counts`. Blocking, up to `timeout`.
pub fn describe<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    group: &str,
    counts: &HashMap<String, i32>,
    timeout: Duration,
) -> GroupAssignment {
    let Ok(list) = consumer.fetch_group_list(Some(group), timeout) else {
        return GroupAssignment::Unknown;
    };
    let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
        return GroupAssignment::Unknown;
    };
    if info.state() != "Stable" || info.members().is_empty() {
        return GroupAssignment::Unknown;
    }
    let mut assigned = Vec::new();
    for member in info.members() {
        match decode_member_assignment(member.assignment().unwrap_or_default()) {
            Ok(share) => assigned.extend(share),
            Err(_) => return GroupAssignment::Unknown,
        }
    }
    GroupAssignment::Stable {
        unassigned: unassigned(counts, &assigned),
    }
}

/// How long after a rebalance a worker first asks for the group's assignment: past a
/// rebalance's usual length, so that the group is stable.
const LOOK_AFTER_REBALANCE: Duration = Duration::from_secs(5);
/// How long a worker waits to look again when the group was not stable or left partitions
/// to nobody (it rejoins only if they are still left so: a share may be on its way).
const LOOK_AGAIN: Duration = Duration::from_secs(3);
/// Looks at an unstable or unlisted group before giving up until the next rebalance.
const MAX_LOOKS: u32 = 12;
/// The longest wait before looking after a rebalance: each rejoin that did not help doubles
/// it (a member of the group that subscribes to fewer topics, say, would leave some
/// partitions to nobody whatever the assignment).
const MAX_LOOK_AFTER: Duration = Duration::from_secs(300);

/// When a worker looks at the group's assignment, and what it does with what it sees: after
/// each rebalance, once the group is stable; a rejoin when two looks in a row find
/// partitions of the inputs given to nobody.
#[derive(Debug, Default)]
pub struct CoverageWatch {
    due: Option<Instant>,
    sightings: u32,
    looks: u32,
    rejoins: u32,
}

/// What a look at the group's assignment calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition of the inputs has a member: nothing until the next rebalance.
    Covered,
    /// Look again at `CoverageWatch::due`.
    LookAgain,
    /// These partitions have had no member for two looks: leave and join again.
    Rejoin(BTreeSet<(String, i32)>),
    /// Not known after many looks: nothing until the next rebalance.
    GivenUp,
}

impl CoverageWatch {
    /// A rebalance gave or took partitions: look once the group has settled.
    pub fn rebalanced(&mut self, now: Instant) {
        let after = LOOK_AFTER_REBALANCE
            .saturating_mul(1 << self.rejoins.min(8))
            .min(MAX_LOOK_AFTER);
        self.due = Some(now + after);
        self.sightings = 0;
        self.looks = 0;
    }

    /// When to look next, if at all.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|due| now >= due)
    }

    /// Takes in what a look found.
    pub fn observe(&mut self, now: Instant, seen: GroupAssignment) -> Verdict {
        self.looks += 1;
        match seen {
            GroupAssignment::Stable { unassigned } if unassigned.is_empty() => {
                self.due = None;
                self.rejoins = 0;
                Verdict::Covered
            }
            GroupAssignment::Stable { unassigned } => {
                self.sightings += 1;
                if self.sightings >= 2 {
                    self.due = None;
                    self.rejoins += 1;
                    Verdict::Rejoin(unassigned)
                } else {
                    self.due = Some(now + LOOK_AGAIN);
                    Verdict::LookAgain
                }
            }
            GroupAssignment::Unknown if self.looks >= MAX_LOOKS => {
                self.due = None;
                Verdict::GivenUp
            }
            GroupAssignment::Unknown => {
                self.due = Some(now + LOOK_AGAIN);
                Verdict::LookAgain
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's assignment as the Java client and librdkafka encode it.
    fn encode(version: i16, share: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((share.len() as i32).to_be_bytes());
        for (topic, partitions) in share {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        match user_data {
            Some(data) => {
                bytes.extend((data.len() as i32).to_be_bytes());
                bytes.extend(data);
            }
            None => bytes.extend((-1i32).to_be_bytes()),
        }
        bytes
    }

    #[test]
    fn a_members_share_decodes_whatever_the_version_and_user_data() {
        for version in 0..=3 {
            let bytes = encode(
                version,
                &[("invoice-events", &[0, 1, 2]), ("grn-events", &[0, 1, 2])],
                Some(b"sticky"),
            );
            assert_eq!(
                decode_member_assignment(&bytes),
                Ok(vec![
                    ("invoice-events".to_owned(), vec![0, 1, 2]),
                    ("grn-events".to_owned(), vec![0, 1, 2]),
                ])
            );
        }
        assert_eq!(decode_member_assignment(&[]), Ok(vec![]));
        assert_eq!(decode_member_assignment(&encode(0, &[], None)), Ok(vec![]));
    }

    #[test]
    fn a_truncated_share_is_an_error_not_a_panic() {
        let bytes = encode(1, &[("invoice-events", &[0, 1, 2])], None);
        for cut in 1..bytes.len() - 4 {
            assert!(
                decode_member_assignment(&bytes[..cut]).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }

    #[test]
    fn partitions_of_a_grown_input_given_to_no_member_are_found() {
        // The shares made on 8 partitions, the topics at 12 since.
        let counts: HashMap<String, i32> = [
            ("invoice-events".to_owned(), 12),
            ("grn-events".to_owned(), 12),
        ]
        .into();
        let shares = vec![
            ("invoice-events".to_owned(), vec![0, 1, 2, 3]),
            ("grn-events".to_owned(), vec![0, 1, 2, 3]),
            ("invoice-events".to_owned(), vec![4, 5, 6, 7]),
            ("grn-events".to_owned(), vec![4, 5, 6, 7]),
        ];
        let left = unassigned(&counts, &shares);
        assert_eq!(left.len(), 8);
        assert!(left.contains(&("grn-events".to_owned(), 11)));
        assert!(!left.contains(&("grn-events".to_owned(), 7)));
        let mut all = shares;
        all.push(("invoice-events".to_owned(), vec![8, 9, 10, 11]));
        all.push(("grn-events".to_owned(), vec![8, 9, 10, 11]));
        assert!(unassigned(&counts, &all).is_empty());
    }

    fn stable(unassigned: &[(&str, i32)]) -> GroupAssignment {
        GroupAssignment::Stable {
            unassigned: unassigned
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
        }
    }

    #[test]
    fn a_worker_rejoins_only_when_two_looks_in_a_row_find_partitions_given_to_nobody() {
        let start = Instant::now();
        let mut watch = CoverageWatch::default();
        assert_eq!(watch.due(), None, "nothing to look at before a rebalance");
        watch.rebalanced(start);
        assert!(!watch.is_due(start));
        let first = watch.due().expect("a look after the rebalance");
        assert!(watch.is_due(first));
        // Rebalancing still, then a share on its way, then the same partitions still left.
        assert_eq!(
            watch.observe(first, GroupAssignment::Unknown),
            Verdict::LookAgain
        );
        assert_eq!(
            watch.observe(first, stable(&[("grn-events", 9)])),
            Verdict::LookAgain
        );
        assert_eq!(
            watch.observe(first, stable(&[("grn-events", 9)])),
            Verdict::Rejoin([("grn-events".to_owned(), 9)].into())
        );
        assert_eq!(
            watch.due(),
            None,
            "the rejoin's rebalance sets the next look"
        );
        // A rejoin that did not help: the next look waits twice as long.
        watch.rebalanced(start);
        assert_eq!(watch.due(), Some(start + LOOK_AFTER_REBALANCE * 2));
        assert_eq!(watch.observe(start, stable(&[])), Verdict::Covered);
        assert_eq!(watch.due(), None);
        watch.rebalanced(start);
        assert_eq!(
            watch.due(),
            Some(start + LOOK_AFTER_REBALANCE),
            "covered: back to the first wait"
        );
    }

    #[test]
    fn a_group_never_seen_stable_is_given_up_until_the_next_rebalance() {
        let now = Instant::now();
        let mut watch = CoverageWatch::default();
        watch.rebalanced(now);
        let verdicts: Vec<Verdict> = (0..MAX_LOOKS)
            .map(|_| watch.observe(now, GroupAssignment::Unknown))
            .collect();
        assert!(verdicts[..verdicts.len() - 1]
            .iter()
            .all(|v| *v == Verdict::LookAgain));
        assert_eq!(verdicts.last(), Some(&Verdict::GivenUp));
        assert_eq!(watch.due(), None);
    }
}
