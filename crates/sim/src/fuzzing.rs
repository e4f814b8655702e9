//! What the fuzz target in `fuzz/` runs, and the default tests replay over the committed
//! corpus (`fuzz/corpus/sim_scenario`): scenario files of both simulators, and settings
//! changed by name.

use crate::Scenario;
use crate::mixnet::MixScenario;

/// `data` as a gossip scenario, a mixnet scenario, and a `--set` assignment. Whatever is
/// accepted is valid, and a mixnet scenario's derived figures are finite.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = Scenario::from_toml(text) {
        s.validate().expect("an accepted scenario is valid");
    }
    if let Ok(s) = MixScenario::from_toml(text) {
        s.validate().expect("an accepted scenario is valid");
        assert!(s.group_size() >= 1);
    }
    if let Ok(s) = MixScenario::default().with_assignment(text) {
        s.validate().expect("an accepted setting is valid");
    }
}

#[cfg(test)]
mod tests {
    /// Every committed corpus file through the fuzz target's function (stable toolchain).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/sim_scenario");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            super::scenario(&std::fs::read(entry.unwrap().path()).unwrap());
            files += 1;
        }
        assert!(files > 0, "{dir} is empty");
    }
}
