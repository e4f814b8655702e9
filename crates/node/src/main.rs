//! `mixnode`: a libp2p mix node, its local testnet, and the tools to measure it.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<std::process::ExitCode> {
    mixnode::main()
}
