//! A bounded memo of [`settings::resolve`]: the same Cluster annotations arrive with every review of the
//! Cluster's KCP and KCTs, and decoding CALICO_ROUTE_REFLECTORS (base64, YAML, every peer rule) is the costliest
//! part of a decision. Results depend only on the `capi-calico.io/` annotations and the Cluster's pod CIDRs, which
//! together are the key.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use ipnet::IpNet;

use crate::settings::{self, ClusterNetwork, PREFIX, Resolution};

/// Entries kept before the memo is emptied and starts again.
const MAX_ENTRIES: usize = 1024;
/// Bytes of keys kept before the memo is emptied (annotation values can be up to ~96 KiB each).
const MAX_KEY_BYTES: usize = 8 * 1024 * 1024;

type Key = (Vec<(String, String)>, Option<Vec<IpNet>>);

/// Thread-safe memo of settings resolutions.
#[derive(Default)]
pub struct SettingsCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Resolution>,
    key_bytes: usize,
}

impl SettingsCache {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`settings::resolve`], remembered.
    pub fn resolve(
        &self,
        annotations: &BTreeMap<String, String>,
        network: Option<&ClusterNetwork>,
    ) -> Resolution {
        let ours: Vec<(String, String)> = annotations
            .iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if ours.is_empty() {
            return settings::resolve(annotations, network);
        }
        let key: Key = (ours, network.map(|n| n.pod_cidrs.clone()));
        if let Ok(inner) = self.inner.lock()
            && let Some(hit) = inner.map.get(&key)
        {
            return hit.clone();
        }
        let resolution = settings::resolve(annotations, network);
        if let Ok(mut inner) = self.inner.lock() {
            let bytes: usize = key.0.iter().map(|(k, v)| k.len() + v.len()).sum();
            if inner.map.len() >= MAX_ENTRIES || inner.key_bytes + bytes > MAX_KEY_BYTES {
                inner.map.clear();
                inner.key_bytes = 0;
            }
            inner.key_bytes += bytes;
            inner.map.insert(key, resolution.clone());
        }
        resolution
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn remembers_exactly_what_resolve_answers() {
        let cache = SettingsCache::new();
        let net = ClusterNetwork {
            pod_cidrs: vec!["100.96.0.0/11".parse().expect("cidr")],
        };
        let cases = [
            annotations(&[]),
            annotations(&[("other/key", "x")]),
            annotations(&[("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true")]),
            annotations(&[
                ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
                ("capi-calico.io/CALICO_POD_CIDR", "10.0.0.0/8"),
            ]),
        ];
        for a in &cases {
            for network in [None, Some(&net)] {
                for _ in 0..2 {
                    assert_eq!(
                        cache.resolve(a, network),
                        settings::resolve(a, network),
                        "{a:?} {network:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_network_is_part_of_the_key() {
        let cache = SettingsCache::new();
        let a = annotations(&[
            ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
            ("capi-calico.io/CALICO_POD_CIDR", "10.0.0.0/16"),
        ]);
        let inside = ClusterNetwork {
            pod_cidrs: vec!["10.0.0.0/8".parse().expect("cidr")],
        };
        let outside = ClusterNetwork {
            pod_cidrs: vec!["192.168.0.0/16".parse().expect("cidr")],
        };
        assert!(matches!(
            cache.resolve(&a, Some(&inside)),
            Resolution::OptedIn { .. }
        ));
        assert!(matches!(
            cache.resolve(&a, Some(&outside)),
            Resolution::Invalid { .. }
        ));
    }

    #[test]
    fn stays_bounded() {
        let cache = SettingsCache::new();
        for i in 0..(MAX_ENTRIES * 2) {
            let a = annotations(&[
                ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
                ("capi-calico.io/CALICO_BGP_AS_NUMBER", &(i + 1).to_string()),
            ]);
            cache.resolve(&a, None);
        }
        assert!(cache.inner.lock().expect("lock").map.len() <= MAX_ENTRIES);
    }
}
