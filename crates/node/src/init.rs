//! `mixnode init`: a complete, commented `node.toml` with fresh keys and a state directory,
//! so that `mixnode run --config node.toml` is the only other step.
//!
//! The file is the example config (`node.example.toml`, every setting with its comment) with
//! the identity, listen and advertised addresses, state directory and discovery bootstrap
//! filled in. Gossip and the example's static pool are left commented out.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use libp2p::{Multiaddr, PeerId, identity};
use mix_sphinx::NodeSecretKey;

const TEMPLATE: &str = include_str!("../node.example.toml");

/// What the operator chose.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where `node.toml` and the state directory go.
    pub(crate) dir: PathBuf,
    /// Listen addresses; the example's when empty.
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) advertise: Option<Multiaddr>,
    /// Discovery bootstrap peers (multiaddrs ending in `/p2p/<peer id>`); none for the first
    /// node of a network.
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// Replace an existing `node.toml`.
    pub(crate) force: bool,
}

/// What was written.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) config: PathBuf,
    pub(crate) peer_id: PeerId,
}

/// Writes `dir/node.toml` (readable by its owner only) and creates `dir/state`.
pub(crate) fn write(options: &Options) -> anyhow::Result<Written> {
    for addr in &options.bootstrap {
        crate::config::bootstrap_peer(addr).context("--bootstrap")?;
    }
    let identity = identity::Keypair::generate_secp256k1();
    let mix = NodeSecretKey::generate(&mut rand::rng());
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let dir = options
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", options.dir.display()))?;
    let state = dir.join("state");
    let text = render(options, &identity, &mix, &state)?;
    // What is written must be what `run` accepts.
    crate::config::parse(&text).context("the generated config does not load (a bug)")?;
    let config = dir.join("node.toml");
    if config.exists() && !options.force {
        bail!("{} exists; pass --force to replace it (its keys would be lost)", config.display());
    }
    create_private_dir(&state)?;
    write_private(&config, &text)?;
    Ok(Written { config, peer_id: identity.public().to_peer_id() })
}

/// The example config with this node's settings in place.
fn render(
    options: &Options,
    identity: &identity::Keypair,
    mix: &NodeSecretKey,
    state: &Path,
) -> anyhow::Result<String> {
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let list = |addrs: &[Multiaddr]| {
        toml::Value::Array(addrs.iter().map(|a| toml::Value::String(a.to_string())).collect())
            .to_string()
    };
    let libp2p_key = hex::encode(identity.to_protobuf_encoding()?);
    let mix_key = hex::encode(*mix.to_bytes());
    let state = state.to_str().context("the state directory's path is not UTF-8")?;
    let mut out = String::from(
        "# A mix node's configuration for `mixnode run --config node.toml`, written by\n\
         # `mixnode init` with fresh keys. Keep it secret: [identity] is the node.\n",
    );
    let mut section = String::new();
    for line in TEMPLATE.lines().skip_while(|l| l.starts_with('#')) {
        let text = line.trim_start();
        if text.starts_with('[') {
            section = text.split_whitespace().next().unwrap_or_default().to_owned();
        }
        let is =
            |key: &str| text.starts_with(key) && text[key.len()..].trim_start().starts_with('=');
        let replaced = match section.as_str() {
            "[identity]" if is("libp2p_key") => {
                Some(format!("libp2p_key = {}", quoted(&libp2p_key)))
            }
            "[identity]" if is("mix_key") => Some(format!("mix_key = {}", quoted(&mix_key))),
            "[network]" if is("listen") && !options.listen.is_empty() => {
                Some(format!("listen = {}", list(&options.listen)))
            }
            "[network]" if text.starts_with("# advertise =") => options
                .advertise
                .as_ref()
                .map(|a| format!("advertise = {}", quoted(&a.to_string()))),
            "[network]" if text.starts_with("# state_dir =") => {
                Some(format!("state_dir = {}", quoted(state)))
            }
            "[discovery]" if is("bootstrap") => {
                Some(format!("bootstrap = {}", list(&options.bootstrap)))
            }
            // Off until the operator picks topics and members; the static pool is the
            // example's, not this network's.
            "[gossip]" | "[[pool]]" if !text.is_empty() && !text.starts_with('#') => {
                Some(format!("# {line}"))
            }
            _ => None,
        };
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

/// Creates `path` (owner only), or makes an existing one owner only: a state directory others
/// can write would let them undo the replay protection across restarts.
fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

/// Writes a fresh owner-only file beside `path` and renames it over `path`: the keys are
/// never readable by others (whatever mode an old file had), a crash leaves the old file or
/// the new one whole, and a symbolic link at `path` is replaced, not followed.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, bootstrap: Vec<Multiaddr>) -> Options {
        Options {
            dir: dir.to_owned(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            advertise: None,
            bootstrap,
            force: false,
        }
    }

    #[test]
    fn the_written_config_loads_with_fresh_keys_state_and_bootstrap() {
        let tmp = tempfile::tempdir().unwrap();
        let peer = "16Uiu2HAmKA5rCEZp7un72XWk76QGcwFe6StyvdRwkcwA8DP7N3pQ";
        let bootstrap: Multiaddr = format!("/ip4/10.0.0.1/tcp/4300/p2p/{peer}").parse().unwrap();
        let dir = tmp.path().join("node");
        let written = write(&options(&dir, vec![bootstrap])).unwrap();
        let text = std::fs::read_to_string(&written.config).unwrap();
        let loaded = crate::config::parse(&text).unwrap();
        assert_eq!(loaded.spec.identity.public().to_peer_id(), written.peer_id);
        assert!(!text.contains("080212207c542428"), "the example's identity is not reused");
        let discovery = loaded.spec.discovery.expect("discovery on");
        assert_eq!(discovery.bootstrap.len(), 1);
        assert_eq!(discovery.bootstrap[0].0.to_string(), peer);
        assert!(loaded.spec.static_nodes.is_empty(), "the example's pool is left out");
        assert!(loaded.spec.gossip.is_none(), "gossip stays off until configured");
        let state = loaded.spec.config.state_dir.expect("a state directory");
        assert!(state.is_dir() && state.starts_with(dir.canonicalize().unwrap()));
        assert!(text.contains("# Where the node keeps its replay state"), "comments kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&written.config).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "node.toml is readable by its owner only");
        }
    }

    #[test]
    fn an_existing_config_is_kept_unless_forced_and_bad_bootstraps_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = write(&options(tmp.path(), vec![])).unwrap();
        let err = write(&options(tmp.path(), vec![])).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // A config others could read before is replaced by one they cannot.
            let open = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(&first.config, open).unwrap();
        }
        let again = write(&Options { force: true, ..options(tmp.path(), vec![]) }).unwrap();
        assert_ne!(first.peer_id, again.peer_id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&again.config).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "replaced with an owner-only file");
        }
        let no_peer: Multiaddr = "/ip4/10.0.0.1/tcp/4300".parse().unwrap();
        let err = write(&options(tmp.path(), vec![no_peer])).unwrap_err();
        assert!(format!("{err:#}").contains("/p2p/"), "{err:#}");
    }
}
