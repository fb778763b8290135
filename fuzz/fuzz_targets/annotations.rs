//! The annotation parser and validator (`settings::resolve`) on arbitrary annotation maps, then the injection built
//! from whatever it accepts. Input: lines `KEY=VALUE`; `KEY` gets the `capi-calico.io/` prefix unless it starts with
//! `!`; `\n`, `\0` and `\\` in a value are unescaped. A leading line `#net CIDR,CIDR` gives the Cluster's pod CIDRs.
//! Checks: no panic; problems and warnings are one line; an accepted result yields an injection (or a size refusal)
//! whose commands are the compile-time constants and whose files all live under /etc/capi-calico/, and an
//! Installation (where it can be rendered) that carries the accepted registry and image path unchanged.
#![no_main]

use std::collections::BTreeMap;

use capi_calico_webhook::delivery::installation;
use capi_calico_webhook::mutation::{self, APPLY_COMMAND, INSTALL_COMMAND, MutationError, Target};
use capi_calico_webhook::settings::{self, ClusterNetwork, PREFIX, Resolution};
use libfuzzer_sys::fuzz_target;

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n').peekable();
    let network = match lines.peek().and_then(|l| l.strip_prefix("#net ")) {
        Some(blocks) => {
            let pod_cidrs = blocks
                .split(',')
                .filter_map(|b| b.trim().parse().ok())
                .collect();
            lines.next();
            Some(ClusterNetwork { pod_cidrs })
        }
        None => None,
    };
    let mut annotations = BTreeMap::new();
    for line in lines {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key.strip_prefix('!') {
            Some(raw) => raw.to_string(),
            None => format!("{PREFIX}{key}"),
        };
        annotations.insert(key, unescape(value));
    }
    match settings::resolve(&annotations, network.as_ref()) {
        Resolution::Invalid { problems } => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(!p.to_string().contains('\n'), "{p}");
            }
        }
        Resolution::NotOptedIn { warnings } => {
            assert!(warnings.iter().all(|w| !w.contains('\n')));
        }
        Resolution::OptedIn { settings, warnings } => {
            assert!(warnings.iter().all(|w| !w.contains('\n')));
            for target in [Target::ControlPlane, Target::Workers] {
                match mutation::desired(&settings, target) {
                    Ok(injection) => {
                        for c in injection
                            .pre_kubeadm_commands
                            .iter()
                            .chain(&injection.post_kubeadm_commands)
                        {
                            assert!(*c == INSTALL_COMMAND || *c == APPLY_COMMAND, "{c}");
                        }
                        for f in &injection.files {
                            assert!(f.path.starts_with(mutation::DIR), "{}", f.path);
                        }
                    }
                    Err(MutationError::TooLarge(_)) => {}
                    Err(e) => panic!("accepted settings give no injection: {e}"),
                }
            }
            // The Installation, where it can be rendered, carries an accepted image source unchanged.
            if let Ok((installation, _)) = installation::render_documents(&settings) {
                let spec = &installation["spec"];
                match &settings.images.registry {
                    Some(registry) => {
                        assert!(registry.ends_with('/'), "{registry}");
                        assert_eq!(spec["registry"], registry.as_str());
                    }
                    None => assert!(spec.get("registry").is_none()),
                }
                match &settings.images.image_path {
                    Some(path) => assert_eq!(spec["imagePath"], path.as_str()),
                    None => assert!(spec.get("imagePath").is_none()),
                }
                match &settings.images.pull_secret {
                    Some(name) => {
                        assert!(settings::values::is_dns1123_subdomain(name), "{name}");
                        assert_eq!(spec["imagePullSecrets"], serde_json::json!([{ "name": name }]));
                    }
                    None => assert!(spec.get("imagePullSecrets").is_none()),
                }
            }
        }
    }
});
