//! What a pod's containers see of the kubelet's disk: its /etc/hosts, /etc/resolv.conf and
//! /etc/hostname, and its volumes (emptyDir on disk or tmpfs, configMap, secret, downwardAPI,
//! projected, hostPath), all under the pod's own directory. Volumes of data are written
//! atomically (a fresh timestamped directory, then `..data` swapped to it) so a container
//! reading while an update lands sees either the old files or the new ones. Fetching the data
//! and tokens is not here.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use nix::mount::{MntFlags, MsFlags};

use crate::spec::BindMount;

/// Cluster DNS settings from the node's configuration.
#[derive(Debug, Clone, Default)]
pub struct Dns {
    /// The cluster DNS Service's address, if there is one.
    pub server: Option<String>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// The files /etc/hosts, /etc/resolv.conf and /etc/hostname of a pod, written into `dir`.
pub fn write_etc(
    dir: &Path,
    pod: &Pod,
    hostname: &str,
    ip: &str,
    dns: &Dns,
) -> io::Result<Vec<BindMount>> {
    fs::create_dir_all(dir)?;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut mounts = Vec::new();

    if !host_network {
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        let fqdn = spec
            .and_then(|s| s.subdomain.as_ref())
            .filter(|sub| !sub.is_empty())
            .map(|sub| format!("{hostname}.{sub}.{namespace}.svc.{}\t", dns.domain))
            .unwrap_or_default();
        hosts.push_str(&format!("{ip}\t{fqdn}{hostname}\n"));
        for alias in spec
            .and_then(|s| s.host_aliases.as_ref())
            .into_iter()
            .flatten()
        {
            let names = alias.hostnames.clone().unwrap_or_default().join("\t");
            hosts.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{names}\n",
                alias.ip
            ));
        }
        mounts.push(write(dir, "hosts", &hosts, "/etc/hosts")?);
        mounts.push(write(
            dir,
            "hostname",
            &format!("{hostname}\n"),
            "/etc/hostname",
        )?);
    }

    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let node_resolv = || fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut resolv = match (policy, &dns.server) {
        ("ClusterFirst", Some(server)) if !host_network => {
            cluster_resolv(server, namespace, &dns.domain)
        }
        ("ClusterFirstWithHostNet", Some(server)) => cluster_resolv(server, namespace, &dns.domain),
        ("None", _) => String::new(),
        _ => node_resolv(),
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for server in config.nameservers.iter().flatten() {
            resolv.push_str(&format!("nameserver {server}\n"));
        }
        if let Some(searches) = &config.searches {
            resolv.push_str(&format!("search {}\n", searches.join(" ")));
        }
        let options: Vec<String> = config
            .options
            .iter()
            .flatten()
            .filter_map(|o| {
                let name = o.name.clone()?;
                Some(match &o.value {
                    Some(value) => format!("{name}:{value}"),
                    None => name,
                })
            })
            .collect();
        if !options.is_empty() {
            resolv.push_str(&format!("options {}\n", options.join(" ")));
        }
    }
    mounts.push(write(dir, "resolv.conf", &resolv, "/etc/resolv.conf")?);
    Ok(mounts)
}

fn cluster_resolv(server: &str, namespace: &str, domain: &str) -> String {
    format!(
        "search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {server}\noptions ndots:5\n"
    )
}

fn write(dir: &Path, name: &str, contents: &str, destination: &str) -> io::Result<BindMount> {
    let path = dir.join(name);
    fs::write(&path, contents)?;
    Ok(BindMount {
        source: path,
        destination: destination.to_string(),
        read_only: false,
    })
}

/// Where a volume's files come from once prepared.
pub enum Prepared {
    /// A directory on the node to bind-mount.
    Dir(PathBuf),
    /// A kind of volume this kubelet cannot provide, with the reason.
    Unsupported(String),
}

/// Data for configMap and secret volumes: name → key → bytes (`None`: it does not exist).
pub type Data = BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>;

/// Service account tokens: (audience, expirationSeconds) → the token, or why there is none.
pub type Tokens = BTreeMap<(String, i64), Result<String, String>>;

/// What volumes are made of, fetched beforehand.
pub struct Inputs<'a> {
    /// The pod (for downward API files).
    pub pod: &'a Pod,
    /// The node's address (`status.hostIP`).
    pub host_ip: &'a str,
    /// ConfigMaps the pod names.
    pub config_maps: &'a Data,
    /// Secrets the pod names.
    pub secrets: &'a Data,
    /// Tokens its projected volumes ask for.
    pub tokens: &'a Tokens,
}

/// The token audience and lifetime a projected `serviceAccountToken` source means (the API
/// server's audience when none is given; an hour by default).
pub fn token_key(audience: Option<&str>, expiration_seconds: Option<i64>) -> (String, i64) {
    (
        audience.unwrap_or("").to_string(),
        expiration_seconds.unwrap_or(3600),
    )
}

/// Prepares `volume` of a pod under `dir` (the pod's volume directory).
pub fn prepare(dir: &Path, volume: &Volume, inputs: &Inputs<'_>) -> io::Result<Prepared> {
    let own = dir.join(&volume.name);
    if let Some(empty) = &volume.empty_dir {
        fs::create_dir_all(&own)?;
        if empty.medium.as_deref() == Some("Memory") {
            let size = empty
                .size_limit
                .as_ref()
                .map(|q| placement::resources::milli(q) / 1000);
            mount_tmpfs(&own, size)?;
        }
        fs::set_permissions(&own, fs::Permissions::from_mode(0o777))?;
        return Ok(Prepared::Dir(own));
    }
    if let Some(downward) = &volume.downward_api {
        let files = match downward_files(inputs, downward.items.as_deref()) {
            Ok(files) => files,
            Err(reason) => return Ok(Prepared::Unsupported(reason)),
        };
        write_atomically(&own, &files, downward.default_mode.unwrap_or(0o644) as u32)?;
        return Ok(Prepared::Dir(own));
    }
    if let Some(projected) = &volume.projected {
        let mut files = BTreeMap::new();
        for source in projected.sources.iter().flatten() {
            let part = if let Some(cm) = &source.config_map {
                let what = format!("configmap {:?}", cm.name);
                match data_of(inputs.config_maps.get(&cm.name), cm.optional, &what) {
                    Ok(data) => select(&data, cm.items.as_deref())?,
                    Err(reason) => return Ok(Prepared::Unsupported(reason)),
                }
            } else if let Some(secret) = &source.secret {
                let what = format!("secret {:?}", secret.name);
                match data_of(inputs.secrets.get(&secret.name), secret.optional, &what) {
                    Ok(data) => select(&data, secret.items.as_deref())?,
                    Err(reason) => return Ok(Prepared::Unsupported(reason)),
                }
            } else if let Some(downward) = &source.downward_api {
                match downward_files(inputs, downward.items.as_deref()) {
                    Ok(part) => part,
                    Err(reason) => return Ok(Prepared::Unsupported(reason)),
                }
            } else if let Some(token) = &source.service_account_token {
                let key = token_key(token.audience.as_deref(), token.expiration_seconds);
                let value = match inputs.tokens.get(&key) {
                    Some(Ok(value)) => value,
                    Some(Err(why)) => {
                        return Ok(Prepared::Unsupported(format!(
                            "volume {:?}: {why}",
                            volume.name
                        )));
                    }
                    None => {
                        return Ok(Prepared::Unsupported(format!(
                            "volume {:?}: no service account token for audience {:?} yet",
                            volume.name, key.0
                        )));
                    }
                };
                BTreeMap::from([(token.path.clone(), value.clone().into_bytes())])
            } else {
                return Ok(Prepared::Unsupported(format!(
                    "volume {:?}: this kind of projected source is not supported yet",
                    volume.name
                )));
            };
            files.extend(part);
        }
        write_atomically(&own, &files, projected.default_mode.unwrap_or(0o644) as u32)?;
        return Ok(Prepared::Dir(own));
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => fs::create_dir_all(&path)?,
            "Directory" if !path.is_dir() => {
                return Ok(Prepared::Unsupported(format!(
                    "hostPath type check failed: {} is not a directory",
                    host.path
                )));
            }
            "File" if !path.is_file() => {
                return Ok(Prepared::Unsupported(format!(
                    "hostPath type check failed: {} is not a file",
                    host.path
                )));
            }
            _ => {}
        }
        return Ok(Prepared::Dir(path));
    }
    let (data, items, mode, optional, what) = if let Some(cm) = &volume.config_map {
        (
            inputs.config_maps.get(&cm.name),
            &cm.items,
            cm.default_mode,
            cm.optional,
            format!("configmap {:?}", cm.name),
        )
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        (
            inputs.secrets.get(&name),
            &secret.items,
            secret.default_mode,
            secret.optional,
            format!("secret {name:?}"),
        )
    } else {
        return Ok(Prepared::Unsupported(format!(
            "volume {:?}: this kind of volume is not supported yet",
            volume.name
        )));
    };
    let data = match data_of(data, optional, &what) {
        Ok(data) => data,
        Err(reason) => return Ok(Prepared::Unsupported(reason)),
    };
    let files = select(&data, items.as_deref())?;
    write_atomically(&own, &files, mode.unwrap_or(0o644) as u32)?;
    Ok(Prepared::Dir(own))
}

/// The data of a ConfigMap or Secret (`what`): an optional one that is missing is empty.
fn data_of(
    data: Option<&Option<BTreeMap<String, Vec<u8>>>>,
    optional: Option<bool>,
    what: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    match data.cloned().flatten() {
        Some(data) => Ok(data),
        None if optional == Some(true) => Ok(BTreeMap::new()),
        None => Err(format!("{what} not found")),
    }
}

/// The files of downward API `items`.
fn downward_files(
    inputs: &Inputs<'_>,
    items: Option<&[DownwardAPIVolumeFile]>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    items
        .unwrap_or_default()
        .iter()
        .map(|item| Ok((item.path.clone(), downward_file(inputs, item)?.into_bytes())))
        .collect()
}

/// A downward API file's contents.
fn downward_file(inputs: &Inputs<'_>, item: &DownwardAPIVolumeFile) -> Result<String, String> {
    if let Some(field) = &item.field_ref {
        let meta = &inputs.pod.metadata;
        // Whole maps are written one `key="value"` per line, sorted.
        let map = match field.field_path.as_str() {
            "metadata.labels" => Some(meta.labels.clone().unwrap_or_default()),
            "metadata.annotations" => Some(meta.annotations.clone().unwrap_or_default()),
            _ => None,
        };
        if let Some(map) = map {
            return Ok(map.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect());
        }
        return super::env::field(inputs.pod, &field.field_path, inputs.host_ip);
    }
    if let Some(resource) = &item.resource_field_ref {
        let container = inputs
            .pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|c| Some(&c.name) == resource.container_name.as_ref())
            .ok_or_else(|| {
                format!(
                    "downward API file {:?}: no container {:?}",
                    item.path, resource.container_name
                )
            })?;
        return super::env::resource(
            container,
            &resource.resource,
            resource.divisor.as_ref().map(|d| d.0.as_str()),
        );
    }
    Err(format!(
        "downward API file {:?}: neither fieldRef nor resourceFieldRef",
        item.path
    ))
}

/// Mounts a tmpfs of at most `size` bytes (half the node's memory if unset, the kernel's
/// default) on `dir`, unless one is there already (a kubelet restart).
fn mount_tmpfs(dir: &Path, size: Option<i64>) -> io::Result<()> {
    if is_mount_point(dir)? {
        return Ok(());
    }
    let options = size
        .filter(|s| *s > 0)
        .map(|s| format!("mode=0777,size={s}"))
        .unwrap_or_else(|| "mode=0777".to_string());
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

fn is_mount_point(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(dir);
    Ok(fs::metadata(dir)?.dev() != fs::metadata(parent)?.dev())
}

/// Unmounts the tmpfs volumes under a pod's volume directory `dir`, so it can be removed.
pub fn unmount_volumes(dir: &Path) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && is_mount_point(&path)? {
            nix::mount::umount2(&path, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// The files a configMap/secret volume holds: every key, or just the listed `items`.
fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let Some(items) = items else {
        return Ok(data.clone());
    };
    let mut files = BTreeMap::new();
    for item in items {
        let Some(value) = data.get(&item.key) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("key {:?} not found", item.key),
            ));
        };
        files.insert(item.path.clone(), value.clone());
    }
    Ok(files)
}

/// Makes `dir` hold exactly `files`, switching all of them at once.
fn write_atomically(dir: &Path, files: &BTreeMap<String, Vec<u8>>, mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let current = dir.join("..data");
    // Unchanged data is left alone, so containers see no churn on every resync.
    if let Ok(target) = fs::read_link(&current) {
        let old = dir.join(&target);
        if same_files(&old, files) {
            return Ok(());
        }
    }
    let stamp = format!("..{}", jiff::Timestamp::now().as_nanosecond());
    let fresh = dir.join(&stamp);
    fs::create_dir_all(&fresh)?;
    for (path, value) in files {
        // Keys were validated by the API; a path that climbs out is still refused here.
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {path:?}"),
            ));
        }
        let file = fresh.join(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&file, value)?;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
    }
    let link = dir.join("..data_tmp");
    let _ = fs::remove_file(&link);
    symlink(&stamp, &link)?;
    fs::rename(&link, &current)?;
    for path in files.keys() {
        let top = path.split('/').next().unwrap_or(path);
        let user_link = dir.join(top);
        if fs::symlink_metadata(&user_link).is_err() {
            symlink(format!("..data/{top}"), &user_link)?;
        }
    }
    // Links to keys that are gone, and old data directories, go.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "..data" || name == stamp {
            continue;
        }
        if name.starts_with("..") {
            fs::remove_dir_all(entry.path())?;
        } else if !files
            .keys()
            .any(|path| path.split('/').next() == Some(name.as_str()))
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn same_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> bool {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = fs::read_dir(&at) else {
            return false;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            count += 1;
            let Ok(relative) = path.strip_prefix(dir) else {
                return false;
            };
            let key = relative.to_string_lossy();
            if files
                .get(key.as_ref())
                .is_none_or(|want| fs::read(&path).ok().as_ref() != Some(want))
            {
                return false;
            }
        }
    }
    count == files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_swap_all_files_at_once_and_drop_removed_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let volume = dir.path().join("config");
        let first = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        write_atomically(&volume, &first, 0o644).expect("first");
        assert_eq!(fs::read_to_string(volume.join("a")).expect("a"), "1");
        let second = BTreeMap::from([("a".to_string(), b"3".to_vec())]);
        write_atomically(&volume, &second, 0o644).expect("second");
        assert_eq!(fs::read_to_string(volume.join("a")).expect("a"), "3");
        assert!(!volume.join("b").exists());
        let data_dirs = fs::read_dir(&volume)
            .expect("list")
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..")
                    && e.path().is_dir()
                    && e.file_name() != "..data"
            })
            .count();
        assert_eq!(data_dirs, 1);
    }
}
