//! What the fuzz target `node_config` runs, and the default tests replay over its committed
//! corpus (`fuzz/corpus/node_config`): a config file as an operator (or a tool writing one)
//! may get it wrong, parsed, and if it parses, the node assembled from it the way `mixnode
//! run` does before it opens a socket.

use std::time::Duration;

use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

/// A mixing delay longer than this from a config that parsed is a finding: the encoded
/// parameter is 16 bits of milliseconds, and strategies draw a few means at most.
const LONGEST_DELAY: Duration = Duration::from_secs(3600);

/// `data` as a `node.toml`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut loaded) = crate::config::parse(text) else { return };
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for _ in 0..8 {
        let parameter = loaded.spec.delay.encode(&mut rng);
        let delay = loaded.spec.delay.sample(parameter.get(), &mut rng);
        assert!(delay <= LONGEST_DELAY, "a {delay:?} delay from parameter {parameter}");
    }
    // The fuzzer must not write files: the state directory is the one part left out.
    loaded.spec.config.state_dir = None;
    let _ = crate::runtime::assemble(loaded.spec);
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz target's function (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/node_config");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            super::config(&std::fs::read(entry.unwrap().path()).unwrap());
            files += 1;
        }
        assert!(files > 0, "{dir} is empty");
    }
}
