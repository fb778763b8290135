//! The Calico selector parser (`settings::selector::validate`, used on BGPPeer `nodeSelector`/`peerSelector`).
//! Checks: no panic and no stack overflow (nesting is bounded).
#![no_main]

use capi_calico_webhook::settings::selector::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = validate(s);
    }
});
