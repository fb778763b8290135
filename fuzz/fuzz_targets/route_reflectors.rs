//! The route reflector decoder (`CALICO_ROUTE_REFLECTORS`: base64 -> bounded YAML -> validated BGPPeers). Input:
//! YAML text, base64-encoded here so the fuzzer works on the YAML; an input starting with `raw:` is passed as the
//! annotation value as is (exercising the base64 layer). Checks: no panic; an error list is never empty; through
//! `settings::resolve` (with every other BGP prerequisite set) each problem is one line, and accepted peers render
//! into the injected BGP files (or are refused as too large).
#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use capi_calico_webhook::mutation::{self, MutationError, Target};
use capi_calico_webhook::settings::peers::parse_route_reflectors;
use capi_calico_webhook::settings::{self, PREFIX, Resolution};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = match data.strip_prefix(b"raw:") {
        Some(rest) => match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
        None => base64::engine::general_purpose::STANDARD.encode(data),
    };
    if let Err(errors) = parse_route_reflectors(&raw, Some(65_100)) {
        assert!(!errors.is_empty());
    }
    let annotations: BTreeMap<String, String> = [
        ("CUSTOM_CALICO_DEPLOYMENT", "true"),
        ("INSTALL_CALICOCTL", "true"),
        ("CONFIGURE_CALICO_BGP_SETTINGS", "true"),
        ("CALICO_BGP_OPTION", "Enabled"),
        ("CALICO_ENCAPSULATION", "None"),
        ("CALICO_BGP_AS_NUMBER", "65100"),
        ("CALICO_ROUTE_REFLECTORS", raw.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
    .collect();
    match settings::resolve(&annotations, None) {
        Resolution::Invalid { problems } => {
            for p in &problems {
                assert!(!p.to_string().contains('\n'), "{p}");
            }
        }
        Resolution::OptedIn { settings, .. } => {
            match mutation::desired(&settings, Target::ControlPlane) {
                Ok(_) | Err(MutationError::TooLarge(_)) => {}
                Err(e) => panic!("accepted peers give no injection: {e}"),
            }
        }
        Resolution::NotOptedIn { .. } => panic!("opted in"),
    }
});
