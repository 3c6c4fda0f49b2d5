//! Image references in their full form (`nginx` is `docker.io/library/nginx:latest`), as
//! containerd names images: the scheduler compares pods' images with what nodes report, and the
//! kubelet looks images up in containerd's store, by the same rule. The rule is a few lines, not
//! worth a reference-parsing crate.

/// `image` in its full form: registry, repository and tag (or digest).
pub fn normalize(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry = first.contains(['.', ':']) || first == "localhost";
    let mut full = match (has_registry, first.is_empty()) {
        (true, _) => name.to_owned(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{name}"),
    };
    match digest {
        Some(digest) => {
            full.push('@');
            full.push_str(digest);
        }
        None => {
            let last = full.rsplit('/').next().unwrap_or_default();
            if !last.contains(':') {
                full.push_str(":latest");
            }
        }
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_in_full() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(normalize("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize("ghcr.io/o/app:v1"), "ghcr.io/o/app:v1");
        assert_eq!(
            normalize("busybox@sha256:abc"),
            "docker.io/library/busybox@sha256:abc"
        );
    }
}
