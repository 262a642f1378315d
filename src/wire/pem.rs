//! The PEM files of TLS (certificates, keys, CAs), read the same way by the server and the
//! client.

use std::path::{Path, PathBuf};

/// A PEM file that could not be read; `what` names its role ("certificate", "key", "CA").
#[derive(Debug, thiserror::Error)]
#[error("reading the TLS {what} {}", path.display())]
pub struct PemFileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The bytes of the PEM file at `path` (parsed later by tonic).
pub fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|source| PemFileError { what, path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_file_names_its_role_and_path() {
        let e = super::read(std::path::Path::new("/no/such/key.pem"), "key").unwrap_err();
        assert_eq!(e.to_string(), "reading the TLS key /no/such/key.pem");
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
    }
}
