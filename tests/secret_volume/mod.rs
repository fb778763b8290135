//! Test helper shared by tests/server_tls.rs and tests/load_lifecycle.rs: certificate files published the way
//! the kubelet updates a Secret volume.

use std::fs;
use std::path::Path;

/// Publish files the way the kubelet updates a Secret volume: a new `..<version>` directory, a temporary `..data`
/// symlink renamed over `..data` (atomic), and `tls.crt -> ..data/tls.crt` links.
pub fn publish(dir: &Path, version: &str, cert: &str, key: &str) {
    let data = dir.join(format!("..{version}"));
    fs::create_dir(&data).unwrap();
    fs::write(data.join("tls.crt"), cert).unwrap();
    fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}
