//! What the background controllers (the delivery reconciler, the template linker) last did for each Cluster, so
//! that a Cluster event with the same inputs is skipped without a request until the resync. CAPI updates a
//! Cluster's status many times while the cluster provisions, and each update is an event for both controllers.
//!
//! Pure: fingerprints and a bounded map, no I/O.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Prefix of the annotations this binary writes on a Cluster to report status (the delivery status). They are its
/// output, not an input of either controller, and are left out of [`hash_cluster`], so writing one does not cause
/// another full pass.
pub const OWN_STATUS_ANNOTATION_PREFIX: &str = "status.capi-calico.io/";

/// Hash the parts of a Cluster that a status-only update leaves alone: everything but `status`,
/// `metadata.resourceVersion`, `metadata.managedFields`, `metadata.generation` and the annotations under
/// [`OWN_STATUS_ANNOTATION_PREFIX`].
pub fn hash_cluster(cluster: &Value, hasher: &mut impl Hasher) {
    const VOLATILE: [&str; 3] = ["resourceVersion", "managedFields", "generation"];
    let Some(object) = cluster.as_object() else {
        return;
    };
    for (key, value) in object {
        match (key.as_str(), value) {
            ("status", _) => continue,
            ("metadata", Value::Object(metadata)) => {
                key.hash(hasher);
                for (field, value) in metadata {
                    if VOLATILE.contains(&field.as_str()) {
                        continue;
                    }
                    field.hash(hasher);
                    match (field.as_str(), value) {
                        ("annotations", Value::Object(annotations)) => {
                            for (name, value) in annotations {
                                if !name.starts_with(OWN_STATUS_ANNOTATION_PREFIX) {
                                    name.hash(hasher);
                                    value.to_string().hash(hasher);
                                }
                            }
                        }
                        _ => value.to_string().hash(hasher),
                    }
                }
            }
            _ => {
                key.hash(hasher);
                value.to_string().hash(hasher);
            }
        }
    }
}

/// A fresh hasher for fingerprints (deterministic within the process).
pub fn hasher() -> DefaultHasher {
    DefaultHasher::new()
}

/// Per Cluster (by key): the fingerprint of the inputs last handled in full, when, and for how long at most it may
/// stand for them (`None`: until the resync). Bounded: emptied past [`Seen::MAX`] entries.
#[derive(Debug, Default)]
pub struct Seen(Mutex<HashMap<String, Entry>>);

type Entry = (u64, Instant, Option<Duration>);

impl Seen {
    /// Entries kept before the map is emptied.
    pub const MAX: usize = 10_000;

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long until the resync is due, when `key` was handled in full with `fingerprint` less than `resync` ago;
    /// `None` when it must be handled now.
    pub fn skip(&self, key: &str, fingerprint: u64, resync: Duration) -> Option<Duration> {
        let map = self.map();
        let (seen, at, valid) = map.get(key)?;
        let valid = valid.map_or(resync, |valid| valid.min(resync));
        (*seen == fingerprint)
            .then(|| valid.checked_sub(at.elapsed()))
            .flatten()
            .filter(|left| !left.is_zero())
    }

    /// Record that `key` was handled in full with `fingerprint`.
    pub fn remember(&self, key: &str, fingerprint: u64) {
        self.insert(key, (fingerprint, Instant::now(), None));
    }

    /// Record that `key` was handled in full with `fingerprint`, but must be handled again after `valid` even when
    /// nothing changes (something outside the inputs is awaited).
    pub fn remember_for(&self, key: &str, fingerprint: u64, valid: Duration) {
        self.insert(key, (fingerprint, Instant::now(), Some(valid)));
    }

    /// Remove `key`'s entry and say what it was: the fingerprint, and how long it stood for (`None`: until the
    /// resync). A full pass starts with this: until it succeeds, no earlier fingerprint may cause a skip.
    pub fn take(&self, key: &str) -> Option<Remembered> {
        self.map()
            .remove(key)
            .map(|(fingerprint, _, valid)| Remembered { fingerprint, valid })
    }
}

/// What [`Seen::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub fingerprint: u64,
    pub valid: Option<Duration>,
}

/// How long to wait before looking again at something that still waits with `fingerprint`: `first`, then twice the
/// previous wait (`previous`, from [`Seen::take`]) for as long as the fingerprint stays the same, up to `max`.
pub fn backing_off(
    previous: Option<Remembered>,
    fingerprint: u64,
    first: Duration,
    max: Duration,
) -> Duration {
    match previous {
        Some(Remembered {
            fingerprint: seen,
            valid: Some(valid),
        }) if seen == fingerprint => valid.saturating_mul(2),
        _ => first,
    }
    .min(max)
}

impl Seen {
    fn insert(&self, key: &str, entry: Entry) {
        let mut map = self.map();
        if map.len() >= Self::MAX && !map.contains_key(key) {
            map.clear();
        }
        map.insert(key.to_string(), entry);
    }

    /// Forget `key` (deleted, or its other inputs changed).
    pub fn forget(&self, key: &str) {
        self.map().remove(key);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fingerprint(cluster: &Value) -> u64 {
        let mut h = hasher();
        hash_cluster(cluster, &mut h);
        h.finish()
    }

    #[test]
    fn the_cluster_hash_ignores_status_only_changes_and_sees_everything_else() {
        let cluster = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {
                "name": "prod-1", "namespace": "team-a", "uid": "u-1", "resourceVersion": "10",
                "generation": 2, "managedFields": [{"manager": "capi"}],
                "annotations": {"capi-calico.io/CUSTOM_CALICO_DEPLOYMENT": "true"},
            },
            "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}}},
            "status": {"phase": "Provisioning"},
        });
        let base = fingerprint(&cluster);
        assert_eq!(base, fingerprint(&cluster.clone()), "deterministic");

        // What a status update changes: the same fingerprint.
        let mut status_only = cluster.clone();
        status_only["status"]["phase"] = json!("Provisioned");
        status_only["metadata"]["resourceVersion"] = json!("11");
        status_only["metadata"]["managedFields"] = json!([{"manager": "capi"}, {"manager": "x"}]);
        assert_eq!(fingerprint(&status_only), base);

        // Our own status annotation is output, not input.
        let mut reported = status_only.clone();
        reported["metadata"]["annotations"]["status.capi-calico.io/delivery"] = json!("Delivered");
        assert_eq!(fingerprint(&reported), base);

        // Anything else: another fingerprint.
        let mut changes: Vec<(&str, Value)> = Vec::new();
        let mut c = cluster.clone();
        c["metadata"]["annotations"]["capi-calico.io/CALICO_BLOCK_SIZE"] = json!("26");
        changes.push(("annotation", c));
        let mut c = cluster.clone();
        c["metadata"]["labels"] = json!({"capi-calico.io/cluster": "prod-1"});
        changes.push(("label", c));
        let mut c = cluster.clone();
        c["spec"]["clusterNetwork"]["pods"]["cidrBlocks"] = json!(["10.0.0.0/16"]);
        changes.push(("spec", c));
        let mut c = cluster.clone();
        c["metadata"]["deletionTimestamp"] = json!("2026-11-26T18:00:00Z");
        changes.push(("deletion", c));
        let mut c = cluster.clone();
        c["metadata"]["uid"] = json!("u-2");
        changes.push(("uid", c));
        for (what, changed) in &changes {
            assert_ne!(fingerprint(changed), base, "{what}");
        }
    }

    #[test]
    fn the_same_inputs_are_skipped_until_the_resync() {
        let seen = Seen::default();
        let resync = Duration::from_secs(600);
        assert_eq!(seen.skip("u-1", 7, resync), None, "never handled");
        seen.remember("u-1", 7);
        let left = seen.skip("u-1", 7, resync).expect("same inputs: skipped");
        assert!(left <= resync && left > resync - Duration::from_secs(60));
        assert_eq!(seen.skip("u-1", 8, resync), None, "other inputs");
        assert_eq!(seen.skip("u-2", 7, resync), None, "other Cluster");
        // Due for the resync: handled in full again.
        assert_eq!(seen.skip("u-1", 7, Duration::ZERO), None);
        seen.forget("u-1");
        assert_eq!(seen.skip("u-1", 7, resync), None, "forgotten");
        // Remembered for a shorter time: skipped until then, never past the resync.
        seen.remember_for("u-1", 7, Duration::from_secs(60));
        let left = seen.skip("u-1", 7, resync).expect("skipped for a while");
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(50),
            "{left:?}"
        );
        assert!(
            seen.skip("u-1", 7, Duration::from_secs(5))
                .expect("resync sooner")
                <= Duration::from_secs(5)
        );
        seen.remember_for("u-1", 7, Duration::ZERO);
        assert_eq!(seen.skip("u-1", 7, resync), None, "due");
        // Backing off, as a full pass does it (take, then remember for the next wait): doubles while the inputs
        // stay, up to the bound; starts again for other inputs, or after a pass that settled.
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(300));
        seen.forget("u-1");
        let pass = |fingerprint: u64| {
            let wait = backing_off(seen.take("u-1"), fingerprint, first, max);
            seen.remember_for("u-1", fingerprint, wait);
            wait.as_secs()
        };
        let times: Vec<u64> = (0..5).map(|_| pass(7)).collect();
        assert_eq!(times, [60, 120, 240, 300, 300]);
        assert_eq!(pass(8), 60, "other inputs");
        assert_eq!(pass(8), 120);
        seen.remember("u-1", 8);
        assert_eq!(pass(8), 60, "after a settled pass");
        assert_eq!(seen.take("u-1").map(|r| r.valid), Some(Some(first)));
        assert_eq!(seen.take("u-1"), None, "taken");
    }

    #[test]
    fn the_map_is_bounded() {
        let seen = Seen::default();
        for i in 0..Seen::MAX {
            seen.remember(&format!("u-{i}"), 1);
        }
        assert_eq!(seen.len(), Seen::MAX);
        seen.remember("one-more", 1);
        assert_eq!(seen.len(), 1);
    }
}
