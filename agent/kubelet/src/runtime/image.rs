//! Images from containerd's image store: the name a pod gives completed the way Docker does
//! (`placement::image`), the manifest for this platform found
//! through an index if there is one, and the config read for its defaults and the chain ID of
//! its unpacked layers. Pulling from registries is not here.

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use futures::TryStreamExt;
use placement::image::normalize;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::Code;

use super::{Error, Runtime};

/// What a container needs from its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The full reference it was found under.
    pub name: String,
    /// The image's ID (its config's digest), as `imageID` in container statuses.
    pub id: String,
    /// The snapshot holding its unpacked layers.
    pub chain_id: String,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// `ENV`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WORKDIR`.
    pub working_dir: String,
    /// `USER`.
    pub user: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    config: RunConfig,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The chain ID of layers with `diff_ids` (the OCI image spec's definition).
fn chain_id(diff_ids: &[String]) -> Option<String> {
    let mut ids = diff_ids.iter();
    let mut chain = ids.next()?.clone();
    for id in ids {
        let digest = Sha256::digest(format!("{chain} {id}").as_bytes());
        chain = format!(
            "sha256:{}",
            digest
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        );
    }
    Some(chain)
}

impl Runtime {
    /// The image `name` refers to, from containerd's store.
    pub async fn image(&self, name: &str) -> Result<ImageConfig, Error> {
        let full = normalize(name);
        let reply = ImagesClient::new(self.channel.clone())
            .get(self.request(GetImageRequest { name: full.clone() }))
            .await;
        let image = match reply {
            Ok(reply) => reply.into_inner().image,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(Error::rpc(format!("looking up image {full}"))(status)),
        }
        .ok_or_else(|| Error::ImageNotPresent(full.clone()))?;
        let bad = |reason: String| Error::BadImage {
            image: full.clone(),
            reason,
        };
        let target = image
            .target
            .ok_or_else(|| bad("it has no target descriptor".to_string()))?;

        let mut manifest_digest = target.digest;
        if target.media_type.contains("index") || target.media_type.contains("manifest.list") {
            let index: Index = self.read_json(&manifest_digest, &full).await?;
            manifest_digest = index
                .manifests
                .into_iter()
                .find(|entry| {
                    entry.platform.as_ref().is_none_or(|platform| {
                        platform.os == "linux"
                            && platform.architecture
                                == std::env::consts::ARCH.replace("x86_64", "amd64")
                    }) && !entry.media_type.contains("index")
                })
                .ok_or_else(|| bad("its index has no manifest for linux/amd64".to_string()))?
                .digest;
        }
        let manifest: Manifest = self.read_json(&manifest_digest, &full).await?;
        let config: Config = self.read_json(&manifest.config.digest, &full).await?;
        let chain_id = chain_id(&config.rootfs.diff_ids)
            .ok_or_else(|| bad("its config lists no layers".to_string()))?;
        Ok(ImageConfig {
            name: full,
            id: manifest.config.digest,
            chain_id,
            entrypoint: config.config.entrypoint.unwrap_or_default(),
            cmd: config.config.cmd.unwrap_or_default(),
            env: config.config.env.unwrap_or_default(),
            working_dir: config.config.working_dir,
            user: config.config.user,
        })
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &str,
        image: &str,
    ) -> Result<T, Error> {
        let chunks: Vec<_> = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(Error::rpc(format!("reading {digest} of {image}")))?
            .into_inner()
            .try_collect()
            .await
            .map_err(Error::rpc(format!("reading {digest} of {image}")))?;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|chunk| chunk.data).collect();
        serde_json::from_slice(&bytes).map_err(|error| Error::BadImage {
            image: image.to_string(),
            reason: format!("{digest} is not what it should be: {error}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let one = vec!["sha256:aa".to_string()];
        assert_eq!(chain_id(&one).as_deref(), Some("sha256:aa"));
        let two = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let expected = Sha256::digest(b"sha256:aa sha256:bb");
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(chain_id(&two), Some(format!("sha256:{expected}")));
        assert_eq!(chain_id(&[]), None);
    }
}
