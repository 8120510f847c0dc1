use p2p_state::murmur2::partition_for;
use std::collections::BTreeMap;
#[test]
#[ignore]
fn dump() {
    let dir = std::env::var("DUMP_DIR").unwrap();
    let name = std::env::var("DUMP_NAME").unwrap();
    let store = p2p_state::Store::open(std::path::Path::new(&dir), &name).unwrap();
    let all = store.entries_of(&|_| true).unwrap();
    let mut owners: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (k, _) in &all {
        *owners
            .entry(p2p_state::owner_of_raw_key(k).unwrap().to_vec())
            .or_default() += 1;
    }
    for (o, n) in owners {
        println!(
            "{} keys={} p4={} p8={} p12={}",
            String::from_utf8_lossy(&o),
            n,
            partition_for(&o, 4),
            partition_for(&o, 8),
            partition_for(&o, 12)
        );
    }
}
