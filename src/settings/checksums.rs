//! The built-in calicoctl SHA-256 table (`calicoctl-linux-<arch>` release assets).
//!
//! Source: `../shared/reference/calico.md` §4 (values from kubespray's checksum table, which mirrors the
//! `SHA256SUMS` file of each Calico release). Add a row when a new Calico version is pinned.

use super::CalicoVersion;

/// The default `CALICO_VERSION`.
pub const DEFAULT_VERSION: CalicoVersion = CalicoVersion {
    major: 3,
    minor: 31,
    patch: 7,
};

/// A CPU architecture calicoctl is installed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The name used in release asset names and the `{arch}` placeholder.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// `(version, amd64, arm64)`; `None` when the architecture's checksum is not known.
const TABLE: &[(CalicoVersion, Option<&str>, Option<&str>)] = &[
    (
        CalicoVersion {
            major: 3,
            minor: 31,
            patch: 7,
        },
        Some("1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113"),
        Some("d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda"),
    ),
    (
        CalicoVersion {
            major: 3,
            minor: 30,
            patch: 7,
        },
        Some("087e1547878913587ebaa756686f38184a730e9af9b71f3d91b92f6c99b60c11"),
        Some("e62d6f909d72bfd8876a363c3f49cda722d7bfdb282a4bbdeca38dd7e26e7578"),
    ),
    (
        CalicoVersion {
            major: 3,
            minor: 29,
            patch: 7,
        },
        Some("c4e281a404d14da561c65838195b2a4bcf18aebca1bede5ef6b99e0bf78cb8a0"),
        Some("484479aa441401adf0db2effb911562d25a4c9a3f022aa6a3b082d027108edec"),
    ),
];

/// The built-in checksum of calicoctl `version` for `arch`, lower-case hex.
pub fn builtin(version: CalicoVersion, arch: Arch) -> Option<&'static str> {
    TABLE
        .iter()
        .find(|(v, _, _)| *v == version)
        .and_then(|(_, amd64, arm64)| match arch {
            Arch::Amd64 => *amd64,
            Arch::Arm64 => *arm64,
        })
}

/// The versions with at least one built-in checksum, newest first.
pub fn known_versions() -> Vec<CalicoVersion> {
    let mut versions: Vec<CalicoVersion> = TABLE.iter().map(|(v, _, _)| *v).collect();
    versions.sort_by(|a, b| b.cmp(a));
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u16, minor: u16, patch: u16) -> CalicoVersion {
        CalicoVersion {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn table_lookups() {
        let cases = [
            (
                v(3, 31, 7),
                Arch::Amd64,
                Some("1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113"),
            ),
            (
                v(3, 31, 7),
                Arch::Arm64,
                Some("d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda"),
            ),
            (
                v(3, 30, 7),
                Arch::Amd64,
                Some("087e1547878913587ebaa756686f38184a730e9af9b71f3d91b92f6c99b60c11"),
            ),
            (
                v(3, 30, 7),
                Arch::Arm64,
                Some("e62d6f909d72bfd8876a363c3f49cda722d7bfdb282a4bbdeca38dd7e26e7578"),
            ),
            (
                v(3, 29, 7),
                Arch::Amd64,
                Some("c4e281a404d14da561c65838195b2a4bcf18aebca1bede5ef6b99e0bf78cb8a0"),
            ),
            (
                v(3, 29, 7),
                Arch::Arm64,
                Some("484479aa441401adf0db2effb911562d25a4c9a3f022aa6a3b082d027108edec"),
            ),
            (v(3, 32, 0), Arch::Amd64, None),
            (v(3, 19, 1), Arch::Arm64, None),
        ];
        for (version, arch, want) in cases {
            assert_eq!(builtin(version, arch), want, "{version:?} {arch:?}");
        }
    }

    #[test]
    fn table_is_well_formed() {
        for (_, amd64, arm64) in TABLE {
            for sum in [amd64, arm64].into_iter().flatten() {
                assert_eq!(sum.len(), 64);
                assert!(sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
            }
        }
        assert!(builtin(DEFAULT_VERSION, Arch::Amd64).is_some());
        assert!(builtin(DEFAULT_VERSION, Arch::Arm64).is_some());
        assert_eq!(
            known_versions(),
            vec![v(3, 31, 7), v(3, 30, 7), v(3, 29, 7)]
        );
        assert_eq!(Arch::Amd64.as_str(), "amd64");
        assert_eq!(Arch::Arm64.as_str(), "arm64");
    }
}
