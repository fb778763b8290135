//! Bounded memos of [`settings::resolve`] and [`mutation::desired`]: the same Cluster annotations arrive with every
//! review of the Cluster's KCP and KCTs. Decoding CALICO_ROUTE_REFLECTORS (base64, YAML, every peer rule) was the
//! costliest part of a decision, and rendering the injected files the next one. Resolutions depend only on the
//! `capi-calico.io/` annotations and the Cluster's pod CIDRs, which together are their key; an injection depends
//! only on the settings and the target.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{BuildHasher, Hash, Hasher, RandomState},
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

/// Thread-safe memo of settings resolutions and injections.
#[derive(Default)]
pub struct SettingsCache {
    inner: Mutex<Inner>,
    injections: Mutex<VecDeque<(Settings, Target, Arc<Injection>)>>,
}

/// Resolutions by a hash of their key; entries with the same hash are told apart by the key itself. A lookup
/// hashes and compares the object's annotations where they are, without copying them.
#[derive(Default)]
struct Inner {
    hasher: RandomState,
    map: HashMap<u64, Vec<Entry>>,
    entries: usize,
    key_bytes: usize,
}

/// One remembered resolution and its key: the `capi-calico.io/` annotations (in key order) and the pod CIDRs.
struct Entry {
    annotations: Vec<(String, String)>,
    pod_cidrs: Option<Vec<IpNet>>,
    resolution: Arc<Resolution>,
}

impl SettingsCache {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The part of `annotations` a resolution depends on (keys under the prefix, and those whose prefix is spelt in
/// another case, which it reports).
fn ours(annotations: &BTreeMap<String, String>) -> impl Iterator<Item = (&str, &str)> + Clone {
    annotations
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX) || settings::is_prefix_in_other_case(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

impl Inner {
    fn fingerprint<'a>(
        &self,
        ours: impl Iterator<Item = (&'a str, &'a str)>,
        pod_cidrs: Option<&[IpNet]>,
    ) -> u64 {
        let mut h = self.hasher.build_hasher();
        for pair in ours {
            pair.hash(&mut h);
        }
        pod_cidrs.hash(&mut h);
        h.finish()
    }

    fn get<'a>(
        &self,
        hash: u64,
        ours: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        pod_cidrs: Option<&[IpNet]>,
    ) -> Option<Arc<Resolution>> {
        self.map.get(&hash)?.iter().find_map(|e| {
            let same = e.pod_cidrs.as_deref() == pod_cidrs
                && e.annotations.len() == ours.clone().count()
                && e.annotations
                    .iter()
                    .zip(ours.clone())
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2);
            same.then(|| Arc::clone(&e.resolution))
        })
    }
}

impl Prepare for SettingsCache {
    /// [`settings::resolve`], remembered.
    fn resolve(
        &self,
        annotations: &BTreeMap<String, String>,
        network: Option<&ClusterNetwork>,
    ) -> Arc<Resolution> {
        let ours = ours(annotations);
        if ours.clone().next().is_none() {
            return Arc::new(settings::resolve(annotations, network));
        }
        let pod_cidrs = network.map(|n| n.pod_cidrs.as_slice());
        let mut hash = None;
        if let Ok(inner) = self.inner.lock() {
            let h = inner.fingerprint(ours.clone(), pod_cidrs);
            if let Some(hit) = inner.get(h, ours.clone(), pod_cidrs) {
                return hit;
            }
            hash = Some(h);
        }
        let resolution = Arc::new(settings::resolve(annotations, network));
        if let (Some(hash), Ok(mut inner)) = (hash, self.inner.lock()) {
            let annotations: Vec<(String, String)> =
                ours.map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if inner.entries >= MAX_ENTRIES || inner.key_bytes + bytes > MAX_KEY_BYTES {
                inner.map.clear();
                inner.entries = 0;
                inner.key_bytes = 0;
            }
            let key = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            // Another thread may have resolved the same key meanwhile.
            if inner.get(hash, key, pod_cidrs).is_none() {
                inner.entries += 1;
                inner.key_bytes += bytes;
                inner.map.entry(hash).or_default().push(Entry {
                    annotations,
                    pod_cidrs: pod_cidrs.map(<[IpNet]>::to_vec),
                    resolution: Arc::clone(&resolution),
                });
            }
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
                        *cache.resolve(a, network),
                        settings::resolve(a, network),
                        "{a:?} {network:?}"
                    );
                }
            }
        }
    }

    /// A key whose prefix is spelt in another case changes the answer (it is reported), so it is part of the key.
    #[test]
    fn keys_with_the_prefix_in_another_case_are_part_of_the_key() {
        let cache = SettingsCache::new();
        let on = ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true");
        let plain = annotations(&[on]);
        let other_case = annotations(&[on, ("Capi-Calico.io/CALICO_BLOCK_SIZE", "26")]);
        for a in [&plain, &other_case, &plain, &other_case] {
            assert_eq!(*cache.resolve(a, None), settings::resolve(a, None), "{a:?}");
        }
        assert!(matches!(
            *cache.resolve(&other_case, None),
            Resolution::Invalid { .. }
        ));
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
            *cache.resolve(&a, Some(&inside)),
            Resolution::OptedIn { .. }
        ));
        assert!(matches!(
            *cache.resolve(&a, Some(&outside)),
            Resolution::Invalid { .. }
        ));
    }

    fn opted_in(pairs: &[(&str, &str)]) -> Settings {
        settings_of(&annotations(pairs))
    }

    fn settings_of(annotations: &BTreeMap<String, String>) -> Settings {
        match settings::resolve(annotations, None) {
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

    /// The `i`-th of many distinct opted-in settings (their AS numbers differ).
    fn distinct(i: usize) -> BTreeMap<String, String> {
        annotations(&[
            ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true"),
            ("capi-calico.io/CALICO_BGP_AS_NUMBER", &(i + 1).to_string()),
        ])
    }

    #[test]
    fn remembered_injections_stay_bounded() {
        let cache = SettingsCache::new();
        for i in 0..(MAX_INJECTIONS * 3) {
            let settings = settings_of(&distinct(i));
            cache
                .injection(&settings, Target::Workers)
                .expect("injection");
        }
        assert_eq!(cache.injections.lock().expect("lock").len(), MAX_INJECTIONS);
    }

    /// Entries that share a hash (forced here) are told apart by their whole key, a shorter list of the same
    /// annotations included.
    #[test]
    fn entries_with_the_same_hash_are_compared_in_full() {
        let on = ("capi-calico.io/CUSTOM_CALICO_DEPLOYMENT", "true");
        let cidr = ("capi-calico.io/CALICO_POD_CIDR", "10.0.0.0/16");
        let keys = [vec![on], vec![on, cidr], vec![cidr]];
        let cidrs: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let mut inner = Inner::default();
        let mut stored = Vec::new();
        for key in &keys {
            for network in [None, Some(cidrs.as_slice())] {
                let resolution = Arc::new(settings::resolve(&annotations(key), None));
                stored.push((key, network, Arc::clone(&resolution)));
                inner.map.entry(7).or_default().push(Entry {
                    annotations: key
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    pod_cidrs: network.map(<[IpNet]>::to_vec),
                    resolution,
                });
            }
        }
        for (key, network, resolution) in &stored {
            let got = inner.get(7, key.iter().copied(), *network).expect("hit");
            assert!(Arc::ptr_eq(&got, resolution), "{key:?} {network:?}");
        }
        assert!(inner.get(7, [cidr, on].into_iter(), None).is_none());
        assert!(inner.get(8, [on].into_iter(), None).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = SettingsCache::new();
        for i in 0..(MAX_ENTRIES * 2) {
            cache.resolve(&distinct(i), None);
        }
        let inner = cache.inner.lock().expect("lock");
        assert!(inner.entries <= MAX_ENTRIES);
        assert_eq!(
            inner.entries,
            inner.map.values().map(Vec::len).sum::<usize>()
        );
    }
}
