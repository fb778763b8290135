//! Bounded memos of [`settings::resolve`] and [`mutation::desired`]: the same Cluster annotations arrive with every
//! review of the Cluster's KCP and KCTs. Decoding CALICO_ROUTE_REFLECTORS (base64, YAML, every peer rule) was the
//! costliest part of a decision, and rendering the injected files the next one. Resolutions depend only on the
//! `capi-calico.io/` annotations and the Cluster's pod CIDRs, which together are their key; an injection depends
//! only on the settings and the target.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use ipnet::IpNet;

use super::policy::Prepare;
use crate::mutation::{self, Injection, MutationError, Target};
use crate::settings::{self, ClusterNetwork, PREFIX, Resolution, Settings};

/// Entries kept before the memo is emptied and starts again.
const MAX_ENTRIES: usize = 1024;
/// Bytes of keys kept before the memo is emptied (annotation values can be up to ~96 KiB each).
const MAX_KEY_BYTES: usize = 8 * 1024 * 1024;
/// Injections kept (most recently used first). A lookup compares settings one by one, so this stays small: a
/// management cluster sees few distinct Calico configurations at a time, and a miss only costs the rendering.
const MAX_INJECTIONS: usize = 32;

type Key = (Vec<(String, String)>, Option<Vec<IpNet>>);

/// Thread-safe memo of settings resolutions.
#[derive(Default)]
pub struct SettingsCache {
    inner: Mutex<Inner>,
    injections: Mutex<VecDeque<(Settings, Target, Arc<Injection>)>>,
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
}

impl Prepare for SettingsCache {
    /// [`settings::resolve`], remembered.
    fn resolve(
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

    /// [`mutation::desired`], remembered (errors are not: they end in a denial and are rare).
    fn injection(
        &self,
        settings: &Settings,
        target: Target,
    ) -> Result<Arc<Injection>, MutationError> {
        if let Ok(mut recent) = self.injections.lock()
            && let Some(i) = recent
                .iter()
                .position(|(s, t, _)| *t == target && s == settings)
            && let Some(hit) = recent.remove(i)
        {
            let injection = Arc::clone(&hit.2);
            recent.push_front(hit);
            return Ok(injection);
        }
        let injection = Arc::new(mutation::desired(settings, target)?);
        if let Ok(mut recent) = self.injections.lock() {
            recent.truncate(MAX_INJECTIONS - 1);
            recent.push_front((settings.clone(), target, Arc::clone(&injection)));
        }
        Ok(injection)
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

    fn opted_in(pairs: &[(&str, &str)]) -> Settings {
        match settings::resolve(&annotations(pairs), None) {
            Resolution::OptedIn { settings, .. } => *settings,
            other => panic!("not opted in: {other:?}"),
        }
    }

    #[test]
    fn remembers_exactly_what_desired_builds() {
        let cache = SettingsCache::new();
        let on = ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true");
        let cases = [
            opted_in(&[on]),
            opted_in(&[on, ("capi-calico.io/INSTALL_CALICOCTL", "false")]),
            opted_in(&[on, ("capi-calico.io/CALICO_POD_CIDR", "10.0.0.0/16")]),
        ];
        for settings in &cases {
            for target in [Target::ControlPlane, Target::Workers] {
                let first = cache.injection(settings, target).expect("injection");
                let again = cache.injection(settings, target).expect("injection");
                assert!(Arc::ptr_eq(&first, &again), "{settings:?} {target:?}");
                assert_eq!(
                    *first,
                    mutation::desired(settings, target).expect("desired")
                );
            }
        }
    }

    #[test]
    fn remembered_injections_stay_bounded() {
        let cache = SettingsCache::new();
        for i in 0..(MAX_INJECTIONS * 3) {
            let settings = opted_in(&[
                ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
                ("capi-calico.io/CALICO_BGP_AS_NUMBER", &(i + 1).to_string()),
            ]);
            cache
                .injection(&settings, Target::Workers)
                .expect("injection");
        }
        assert_eq!(cache.injections.lock().expect("lock").len(), MAX_INJECTIONS);
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
