//! The host-list cache file: the last good answer of a [`crate::HostWatcher`], kept on
//! disk so that a process restarted while no registry answers still has hosts to use.
//!
//! The file holds the registry's own `GET /v1/registration/{service}` body
//! ([`HostsResponse`]), so it can be read by anything that reads the API. It is replaced
//! atomically (a temporary file in the same folder, flushed, then renamed over it), so a
//! crash mid-write leaves the previous list, never half of one.

use std::path::{Path, PathBuf};

use discovery_api::{HostsResponse, ServiceName};
use tokio::io::AsyncWriteExt;

use crate::Error;

/// Reads the cached host list of `service`.
pub(crate) async fn load(path: &Path, service: &ServiceName) -> Result<HostsResponse, Error> {
    let bytes = tokio::fs::read(path).await.map_err(|source| Error::Cache {
        path: path.to_owned(),
        source,
    })?;
    let response: HostsResponse =
        serde_json::from_slice(&bytes).map_err(|e| Error::CacheContent {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if response.service != service.as_str() {
        return Err(Error::CacheContent {
            path: path.to_owned(),
            reason: format!(
                "it holds service {:?}, not {:?}",
                response.service,
                service.as_str()
            ),
        });
    }
    Ok(response)
}

/// Replaces the cache file with `response`, atomically.
pub(crate) async fn store(path: &Path, response: &HostsResponse) -> Result<(), Error> {
    let io_error = |source| Error::Cache {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(response).expect("a host list always serializes");
    let tmp = temp_path(path);
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(&bytes).await?;
        // Flushed before the rename, or a crash could leave the new name on empty data.
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if written.is_err() {
        // Best effort: a leftover temporary file is harmless but untidy.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written.map_err(io_error)
}

/// A temporary name next to `path` (same folder, so the rename stays on one file system),
/// unique per process so that two watchers cannot interleave their writes.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(service: &str) -> HostsResponse {
        serde_json::from_value(serde_json::json!({
            "service": service, "env": "test", "hosts": [{
                "service": service, "ip_address": "10.0.0.7", "port": 8080,
                "revision": "abc", "service_repo_name": "", "tags": {"az": "a"},
                "last_check_in": "2026-11-28T12:00:00.123456Z"}]
        }))
        .unwrap()
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "discovery-client-cache-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_stored_list_loads_back_and_leaves_no_temporary_file() {
        let dir = scratch_dir("roundtrip");
        let path = dir.join("payments.json");
        let service = ServiceName::parse("payments").unwrap();
        store(&path, &sample("payments")).await.unwrap();
        store(&path, &sample("payments")).await.unwrap();
        assert_eq!(load(&path, &service).await.unwrap(), sample("payments"));
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_cache_of_another_service_or_garbage_is_refused() {
        let dir = scratch_dir("refused");
        let path = dir.join("cache.json");
        store(&path, &sample("billing")).await.unwrap();
        let service = ServiceName::parse("payments").unwrap();
        let err = load(&path, &service).await.unwrap_err().to_string();
        assert!(err.contains("billing"), "{err}");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            load(&path, &service).await,
            Err(Error::CacheContent { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(
            load(&path, &service).await,
            Err(Error::Cache { .. })
        ));
    }
}
