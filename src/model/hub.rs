//! Naming a model on the command line, and fetching one from the Hugging Face Hub.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use super::{ModelError, ModelFiles, INT8_RANGES_FILE};

/// What `--model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder on disk.
    Local(PathBuf),
    /// A Hub repository, `org/name` with an optional `@revision`.
    Hub { repo: String, revision: Option<String> },
}

impl ModelSource {
    /// An existing path, or anything that starts like a path (`.`, `/`, `~`), is local;
    /// `org/name[@revision]` is a Hub id.
    pub fn parse(spec: &str) -> Self {
        let path = PathBuf::from(spec);
        let looks_like_path = spec.starts_with(['.', '/', '~']) || spec.contains('\\') || path.exists();
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, Some(rev.to_string())),
            None => (spec, None),
        };
        let parts: Vec<&str> = repo.split('/').collect();
        let hub_like = parts.len() == 2 && parts.iter().all(|p| !p.is_empty());
        if looks_like_path || !hub_like {
            ModelSource::Local(path)
        } else {
            ModelSource::Hub { repo: repo.to_string(), revision: revision.filter(|r| !r.is_empty()) }
        }
    }
}

/// Downloads (or finds in the Hub cache, `HF_HOME`) the files of a Hub model.
pub(super) fn fetch(source: &ModelSource) -> Result<ModelFiles, ModelError> {
    let ModelSource::Hub { repo, revision } = source else { unreachable!("fetch is only called with a Hub source") };
    let hub_err = |file: &str, reason: String| ModelError::Hub { repo: repo.clone(), file: file.to_string(), reason };
    let api = ApiBuilder::from_env().with_progress(false).build().map_err(|e| hub_err("(api)", e.to_string()))?;
    let repo_ref = match revision {
        Some(rev) => Repo::with_revision(repo.clone(), RepoType::Model, rev.clone()),
        None => Repo::new(repo.clone(), RepoType::Model),
    };
    let api_repo = api.repo(repo_ref);
    let get = |file: &str| api_repo.get(file).map_err(|e| hub_err(file, e.to_string()));
    let config = get("config.json")?;
    let tokenizer = get("tokenizer.json")?;
    let encoder = get("encoder.safetensors").or_else(|_| get("model.safetensors"))?;
    let origin = match revision {
        Some(rev) => format!("{repo}@{rev}"),
        None => repo.clone(),
    };
    Ok(ModelFiles {
        public_origin: origin.clone(),
        origin,
        config,
        tokenizer,
        encoder,
        stance: get("stance.safetensors").ok(),
        manifest: get("manifest.json").ok(),
        int8_ranges: get(INT8_RANGES_FILE).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_model_specs() {
        assert_eq!(
            ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2"),
            ModelSource::Hub { repo: "sentence-transformers/all-MiniLM-L6-v2".into(), revision: None }
        );
        assert_eq!(
            ModelSource::parse("org/name@v1.2"),
            ModelSource::Hub { repo: "org/name".into(), revision: Some("v1.2".into()) }
        );
        assert_eq!(ModelSource::parse("./org/name"), ModelSource::Local("./org/name".into()));
        assert_eq!(ModelSource::parse("/abs/dir"), ModelSource::Local("/abs/dir".into()));
        assert_eq!(ModelSource::parse("plainfolder"), ModelSource::Local("plainfolder".into()));
        assert_eq!(ModelSource::parse("a/b/c"), ModelSource::Local("a/b/c".into()));
    }

    #[test]
    fn unreachable_hub_gives_an_error_naming_the_flag() {
        // Point the client at a closed local port so the test never leaves the machine.
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", dir.path());
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        let err = ModelFiles::resolve("nobody/nothing").unwrap_err().to_string();
        assert!(err.contains("--model PATH"), "{err}");
        assert!(err.contains("nobody/nothing"), "{err}");
    }
}
