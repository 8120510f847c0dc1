//! Durable timers, kept in the store beside the state they belong to: escalations, pending
//! invoices' wait limits, payment runs. A timer is (due time, owner state key, name).
//!
//! Timer keys start with [`TIMER_PREFIX`] (0xFE), which no state key can start with (state keys
//! start with a key group below 1024, so their first byte is at most 0x03), then the due time
//! as a sign-flipped big-endian i64 (byte order = time order), the owner's state key and the
//! timer's name. Finding what is due is one ordered range scan; scheduling and firing are
//! ordinary writes in the batch of the transaction that causes them.

use crate::key::StateKey;
use crate::store::{Result, StateError, Store, StoreBatch};

/// First byte of every timer key.
pub const TIMER_PREFIX: u8 = 0xFE;

/// One timer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    /// Due time in ms since the epoch (event time or wall-clock time, as its user decides).
    pub due: i64,
    /// The state the timer belongs to.
    pub owner: StateKey,
    /// Which of the owner's timers (an owner may have several, e.g. "escalation").
    pub name: String,
}

fn time_bytes(t: i64) -> [u8; 8] {
    // Flipping the sign bit makes unsigned byte order agree with signed numeric order.
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

impl Timer {
    fn encode(&self) -> Vec<u8> {
        let owner = self.owner.as_bytes();
        let mut key = Vec::with_capacity(1 + 8 + 2 + owner.len() + 1 + self.name.len());
        key.push(TIMER_PREFIX);
        key.extend_from_slice(&time_bytes(self.due));
        // Owner length first, so owner bytes never run into the name.
        key.extend_from_slice(&(owner.len() as u16).to_be_bytes());
        key.extend_from_slice(owner);
        key.extend_from_slice(self.name.as_bytes());
        key
    }

    fn decode(key: &[u8]) -> Option<Timer> {
        let rest = key.strip_prefix(&[TIMER_PREFIX])?;
        let due = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) ^ (1 << 63);
        let len = u16::from_be_bytes(rest.get(8..10)?.try_into().ok()?) as usize;
        let owner = rest.get(10..10 + len)?;
        let name = std::str::from_utf8(rest.get(10 + len..)?).ok()?;
        Some(Timer {
            due: due as i64,
            owner: StateKey::from_bytes(owner.to_vec())?,
            name: name.to_owned(),
        })
    }
}

impl StoreBatch {
    /// Schedules `timer` (idempotent: the same timer twice is one timer).
    pub fn schedule(&mut self, timer: &Timer) {
        self.put_raw(&timer.encode(), &[]);
    }

    /// Removes `timer`, fired or no longer needed.
    pub fn cancel(&mut self, timer: &Timer) {
        self.delete_raw(&timer.encode());
    }
}

impl Store {
    /// Timers due at or before `now` of the keys this instance serves, earliest first, at most
    /// `limit` of them.
    pub fn due_timers(&self, now: i64, limit: usize) -> Result<Vec<Timer>> {
        let mut upper = vec![TIMER_PREFIX];
        upper.extend_from_slice(&time_bytes(now.saturating_add(1)));
        let mut timers = Vec::new();
        for entry in self.scan_raw(&[TIMER_PREFIX], &upper) {
            let (key, _) = entry?;
            if !self.serves(&key) {
                continue;
            }
            let timer = Timer::decode(&key).ok_or_else(|| StateError::Corrupt {
                store: self.name().to_owned(),
                reason: "a timer key does not decode".into(),
            })?;
            timers.push(timer);
            if timers.len() == limit {
                break;
            }
        }
        Ok(timers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Serves;
    use p2p_processors::OrgId;

    fn timer(due: i64, entity: &str, name: &str) -> Timer {
        Timer {
            due,
            owner: StateKey::new(&OrgId::from_u128(1), entity),
            name: name.into(),
        }
    }

    fn schedule(store: &Store, timers: &[Timer]) {
        let mut batch = StoreBatch::default();
        for t in timers {
            batch.schedule(t);
        }
        store.write(batch).unwrap();
    }

    #[test]
    fn due_timers_come_earliest_first_and_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        schedule(
            &store,
            &[
                timer(300, "po_c", "x"),
                timer(-5, "po_a", "x"),
                timer(100, "po_b", "escalation"),
            ],
        );
        let due: Vec<i64> = store
            .due_timers(100, 10)
            .unwrap()
            .iter()
            .map(|t| t.due)
            .collect();
        assert_eq!(due, vec![-5, 100]);
        assert_eq!(store.due_timers(99, 10).unwrap().len(), 1);
        assert_eq!(
            store.due_timers(i64::MAX, 1).unwrap(),
            vec![timer(-5, "po_a", "x")]
        );
    }

    #[test]
    fn a_timer_decodes_to_what_was_scheduled() {
        let t = timer(1_767_225_600_000, "po_123", "pending-wait-limit");
        assert_eq!(Timer::decode(&t.encode()), Some(t));
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_timers_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), "s").unwrap();
            schedule(&store, &[timer(10, "po_a", "x"), timer(20, "po_b", "x")]);
            let mut batch = StoreBatch::default();
            batch.cancel(&timer(10, "po_a", "x"));
            store.write(batch).unwrap();
        }
        let store = Store::open(dir.path(), "s").unwrap();
        assert_eq!(
            store.due_timers(100, 10).unwrap(),
            vec![timer(20, "po_b", "x")]
        );
    }

    #[test]
    fn only_the_timers_of_orgs_the_instance_serves_fire_and_the_rest_stay_scheduled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        let ours = |due, entity: &str| Timer {
            due,
            owner: StateKey::new(&OrgId::from_u128(1), entity),
            name: "x".into(),
        };
        let theirs = |due, entity: &str| Timer {
            due,
            owner: StateKey::new(&OrgId::from_u128(2), entity),
            name: "x".into(),
        };
        // Theirs come first and would fill the limit if they counted.
        schedule(
            &store,
            &[theirs(1, "a"), theirs(2, "b"), ours(3, "c"), ours(4, "d")],
        );
        let org = OrgId::from_u128(1);
        store.serve_only(std::sync::Arc::new(move |key: &[u8]| {
            crate::owner_of_raw_key(key) == Some(org.as_str().as_bytes())
        }));
        assert_eq!(
            store.due_timers(100, 2).unwrap(),
            vec![ours(3, "c"), ours(4, "d")]
        );
        // Served again (the partition came back): they were never lost.
        store.serve_only(std::sync::Arc::new(|_: &[u8]| true));
        assert_eq!(store.due_timers(100, 10).unwrap().len(), 4);
    }

    #[test]
    fn timers_never_show_up_among_state_and_state_never_among_timers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        let owner = StateKey::new(&OrgId::from_u128(1), "po_a");
        let mut batch = StoreBatch::default();
        batch.put(&owner, &"state").unwrap();
        batch.schedule(&timer(5, "po_a", "x"));
        store.write(batch).unwrap();
        assert_eq!(
            store.get::<String>(&owner).unwrap().as_deref(),
            Some("state")
        );
        assert_eq!(store.due_timers(i64::MAX, 10).unwrap().len(), 1);
        assert!(owner.as_bytes()[0] < TIMER_PREFIX);
    }

    #[test]
    fn workers_sharing_a_store_see_each_others_writes_and_fire_only_their_own_timers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "s").unwrap();
        let first = store.share();
        let second = store.share();
        let of = |org: u128, due, entity: &str| Timer {
            due,
            owner: StateKey::new(&OrgId::from_u128(org), entity),
            name: "x".into(),
        };
        // Written through one worker's handle, state is the other's to read when its
        // partition moves there.
        let key = StateKey::new(&OrgId::from_u128(1), "po_a");
        let mut batch = StoreBatch::default();
        batch.put(&key, &"state").unwrap();
        first.write(batch).unwrap();
        assert_eq!(
            second.get::<String>(&key).unwrap().as_deref(),
            Some("state")
        );
        schedule(&first, &[of(1, 1, "a"), of(2, 2, "b")]);
        // Before an assignment a worker's handle fires nothing.
        assert!(first.due_timers(100, 10).unwrap().is_empty());
        let serve = |org: u128| -> Serves {
            let org = OrgId::from_u128(org);
            std::sync::Arc::new(move |key: &[u8]| {
                crate::owner_of_raw_key(key) == Some(org.as_str().as_bytes())
            })
        };
        first.serve_only(serve(1));
        second.serve_only(serve(2));
        assert_eq!(first.due_timers(100, 10).unwrap(), vec![of(1, 1, "a")]);
        assert_eq!(second.due_timers(100, 10).unwrap(), vec![of(2, 2, "b")]);
    }
}
