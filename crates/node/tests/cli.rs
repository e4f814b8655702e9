//! The `mixnode` binary as a user runs it.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

fn mixnode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mixnode")).args(args).output().unwrap()
}

fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sphinx/tests/vectors")
}

#[test]
fn bench_pow_reports_each_difficulty() {
    let out = mixnode(&["bench", "pow", "--json", "--difficulty", "4,8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, d) in rows.iter().zip([4, 8]) {
        assert_eq!(row["difficulty"], d);
        for key in ["solve_mean_ms", "solve_median_ms", "solve_vs_expected", "verify_us"] {
            assert!(row[key].is_f64(), "missing {key}: {report}");
        }
    }
    assert!(report["attempt_ns"].as_f64().unwrap() > 0.0);
    let refused = mixnode(&["bench", "pow", "--difficulty", "40"]);
    assert!(!refused.status.success());
}

/// Mix nodes as separate processes: one is killed with SIGKILL mid-run and restarted from
/// its config and state directory; it comes back, is offered for paths again and forwards,
/// and nothing sent outside its in-flight window is lost.
#[test]
fn testnet_processes_survive_a_killed_and_restarted_node() {
    let out = mixnode(&[
        "testnet",
        "--processes",
        "--nodes",
        "4",
        "--phase-secs",
        "2",
        "--down-ms",
        "1000",
        "--rate",
        "30",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let restart = &report["restart"];
    assert_eq!(report["processes"], true, "{report}");
    assert_eq!(restart["killed"], 3, "{report}");
    assert!(restart["back_after_ms"].is_f64(), "the node never forwarded again: {report}");
    assert!(restart["forwarded_after_restart"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(restart["rediscovered"], true, "not offered for paths again: {report}");
    assert!(restart["suspended_after_ms"].is_f64(), "the client never dropped it: {report}");
    assert_eq!(restart["replay_state_loaded"], true, "{report}");
    assert!(restart["replay_filters_restored"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(restart["delivery_outside_in_flight"], 1.0, "{report}");
    assert!(restart["after"]["sent"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["clean_exits"], 4, "a node did not stop cleanly on SIGTERM: {report}");
    let dirs = report["node_dirs"].as_str().unwrap();
    let _ = std::fs::remove_dir_all(dirs);
}

/// Both wire generations, end to end: every message, request, reply and gossip publication
/// arrives (and, under v1, the default 2 MB stream, bit-exact).
#[test]
fn testnet_json_reports_a_clean_run() {
    clean_run("v1", "exact", &[]);
    // The default's stream runs in `testnet_streams_a_megabyte_bit_exact_over_three_hops`.
    clean_run("lip-183", "mean", &["--stream-bytes", "0"]);
}

fn clean_run(wire: &str, semantics: &str, extra: &[&str]) {
    let mut args = vec![
        "testnet",
        "--json",
        "--wire",
        wire,
        "--nodes",
        "6",
        "--messages",
        "40",
        "--requests",
        "15",
        "--rate",
        "200",
        "--delay-ms",
        "2",
        "--seed",
        "7",
        "--gossip-messages",
        "12",
    ];
    args.extend_from_slice(extra);
    let out = mixnode(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Gossip over the same nodes: every route reaches every member; stem and mix publications
    // come back to their publisher as confirmation.
    let routes = report["gossip"]["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3, "{report}");
    for route in routes {
        assert_eq!(route["published"], 4, "{route}");
        assert_eq!(route["delivered_to_all"], 4, "{route}");
        assert_eq!(route["delivery_ratio"], 1.0, "{route}");
        if route["route"] != "direct" {
            assert_eq!(route["confirmed"], 4, "{route}");
        }
    }
    for key in ["nodes", "sent", "delivered", "duplicates", "replies_expected", "replies_received"]
    {
        assert!(report[key].is_u64(), "missing {key}: {report}");
    }
    for q in ["p50", "p95", "p99"] {
        assert!(report["latency_ms"][q].is_f64(), "missing latency_ms.{q}: {report}");
    }
    assert_eq!(report["nodes"], 6);
    let spoken = (report["wire"].as_str(), report["delay_semantics"].as_str());
    assert_eq!(spoken, (Some(wire), Some(semantics)), "{report}");
    if extra.is_empty() {
        assert_eq!(report["stream"]["bit_exact"], true, "{report}");
        assert_eq!(report["stream"]["reply_verified"], true, "{report}");
    }
    assert_eq!((report["sent"].as_u64(), report["delivered"].as_u64()), (Some(40), Some(40)));
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["replies_received"], 15, "{report}");
    let forwarded: u64 =
        report["forwarded_per_node"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
    // Each message and request takes two forwarding hops; each reply copy two more.
    assert!(forwarded >= 2 * (40 + 15 + 15), "{report}");
}

#[test]
fn vectors_verify_passes_the_reference_files_and_names_failures() {
    let dir = vectors_dir();
    let aes = dir.join("sphinx-aes-ctr.json");
    let lioness = dir.join("sphinx-lioness.json");
    let out = mixnode(&["vectors", "verify", aes.to_str().unwrap(), lioness.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("5/5 cases ok").count(), 2, "{stdout}");

    // A file that is not one of the shared ones: a corrupted copy.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&aes).unwrap()).unwrap();
    json["surb"][0]["expected_surb"] = "00".repeat(734).into();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), json.to_string()).unwrap();
    let out = mixnode(&["vectors", "verify", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("4/5 cases ok"), "{stdout}");
    assert!(stdout.contains("FAIL surb \"surb-localhost-tcp\": expected_surb"), "{stdout}");
}

#[test]
fn keygen_output_is_a_loadable_identity_and_bad_configs_are_explained() {
    let out = mixnode(&["keygen", "--advertise", "/ip4/127.0.0.1/tcp/4400"]);
    assert!(out.status.success());
    let keys = String::from_utf8(out.stdout).unwrap();
    let config = format!("{keys}\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &config).unwrap();
    // The config parses; `run` would start a node. A wrong key type is refused clearly.
    let bad = config.replace("[network]", "[network]\nbogus = 1");
    std::fs::write(tmp.path(), bad).unwrap();
    let out = mixnode(&["run", "--config", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("unknown field") && stderr.contains("bogus"), "{stderr}");
}

/// A node in two commands: `init` writes the config, `run` starts from it.
#[test]
fn init_then_run_starts_a_node() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let dir = dir.to_str().unwrap();
    let out = mixnode(&["init", "--dir", dir, "--listen", "/ip4/127.0.0.1/tcp/0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let config = format!("{dir}/node.toml");
    assert!(printed.contains(&format!("mixnode run --config {config}")), "{printed}");
    let child = Command::new(env!("CARGO_BIN_EXE_mixnode"))
        .args(["run", "--config", &config, "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let running =
        lines.by_ref().take(40).map(Result::unwrap).any(|l| l.contains("mix node running"));
    assert!(running, "no start log");
    // A second init into the same directory keeps the keys.
    let again = mixnode(&["init", "--dir", dir]);
    assert!(!again.status.success());
    // What a service manager sends to stop it: a clean stop that saves the replay state.
    let state = std::path::Path::new(dir).join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir(&state).unwrap();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.0.wait().unwrap();
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{}", log.join("\n"));
    let saved = std::fs::read_dir(&state).unwrap().count();
    assert!(saved > 0, "the replay state was saved at the stop");
}

#[test]
fn run_starts_a_node_that_serves_metrics() {
    use std::io::{BufRead, BufReader, Read, Write};
    let keys = String::from_utf8(mixnode(&["keygen"]).stdout).unwrap();
    // The first node of a network: discovery with nobody to bootstrap from yet.
    let config = format!(
        "{keys}\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n[discovery]\n[gossip]\ntopics = [\"t\"]\n"
    );
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixnode"))
        .args(["run", "--config", tmp.path().to_str().unwrap(), "--metrics", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut endpoint = None;
    let mut running = false;
    for line in lines.by_ref().take(20) {
        let line = line.unwrap();
        running |= line.contains("mix node running");
        if let Some(at) = line.find("http://") {
            endpoint = Some(line[at + 7..].trim_end_matches("/metrics").trim().to_owned());
            break;
        }
    }
    assert!(running, "no start log");
    let endpoint = endpoint.expect("metrics address logged");
    let mut socket = std::net::TcpStream::connect(&endpoint).unwrap();
    socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    socket.read_to_string(&mut body).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("mix_packets_received_total"), "{body}");
    assert!(body.contains("mix_gossip_neighbors"), "gossip metrics served: {body}");
}

#[test]
fn testnet_gossip_over_quic_reaches_every_member() {
    // Mix traffic and discovery dial the same peers gossip does: a dial gossip skips because
    // another is under way must not count as the peer being unreachable.
    let out = mixnode(&[
        "testnet",
        "--json",
        "--quic",
        "--nodes",
        "10",
        "--messages",
        "30",
        "--requests",
        "5",
        "--stream-bytes",
        "0",
        "--gossip-messages",
        "15",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["transport"], "quic");
    for route in report["gossip"]["routes"].as_array().unwrap() {
        assert_eq!(route["delivery_ratio"], 1.0, "{route}");
        assert_eq!(route["delivered_to_all"], route["published"], "{route}");
    }
}

#[test]
fn sim_gossip_prints_the_figures_as_json() {
    let out = mixnode(&[
        "sim",
        "gossip",
        "--json",
        "--nodes",
        "200",
        "--crash",
        "0.5",
        "--spies",
        "0.1",
        "--route",
        "stem",
        "--broadcasts",
        "5",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["delivery_first_after_crash", "delivery_steady", "rmr", "ldh_mean", "spy_success"] {
        assert!(report[key].is_number(), "missing {key}: {report}");
    }
    assert_eq!(report["delivery_steady"], 1.0, "{report}");
    assert_eq!(report["route"], "stem");
    let refused = mixnode(&["sim", "gossip", "--route", "carrier-pigeon"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("direct, stem or mix"));
    let refused = mixnode(&["sim", "gossip", "--nodes", "3"]);
    assert!(!refused.status.success());
}

#[test]
fn sim_gossip_plays_each_adversary_and_reports_it() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "sim",
            "gossip",
            "--json",
            "--nodes",
            "150",
            "--crash",
            "0",
            "--broadcasts",
            "2",
            "--spy-broadcasts",
            "20",
        ];
        args.extend_from_slice(extra);
        let out = mixnode(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let sybil = run(&["--adversary", "sybil", "--route", "mix"]);
    for key in ["spy_success", "sybil_share_active", "sybil_share_passive", "first_spy_success"] {
        assert!(sybil[key].is_number(), "missing {key}: {sybil}");
    }
    assert_eq!(
        (sybil["adversary"].as_str(), sybil["route"].as_str()),
        (Some("sybil"), Some("mix"))
    );
    assert_eq!(sybil["rebroadcasters"], "directory");
    let timing = run(&["--adversary", "timing", "--route", "stem", "--spies", "0.1"]);
    assert_eq!(timing["adversary"], "timing");
    assert!(timing["spy_success"].is_number(), "{timing}");
    let repeated = run(&[
        "--adversary",
        "repeated",
        "--route",
        "mix",
        "--rebroadcasters",
        "views",
        "--repeated-publishers",
        "2",
        "--repeated-messages",
        "5",
    ]);
    assert_eq!(repeated["repeated"]["publishers"], 2, "{repeated}");
    assert!(repeated["repeated"]["named"].is_number(), "{repeated}");
    assert_eq!(repeated["rebroadcasters"], "views");
    let refused = mixnode(&["sim", "gossip", "--adversary", "oracle"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("first-spy, timing"));
}

#[test]
fn sim_mix_prints_the_adversarys_figures_as_json() {
    let out = mixnode(&["sim", "mix", "--json", "--nodes", "12", "--messages", "150"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "nodes",
        "senders",
        "messages",
        "entropy_bits_mean",
        "entropy_normalised_mean",
        "entropy_normalised_p5",
        "top1_linkage",
        "receiver_entropy_normalised_mean",
        "latency_ms_p50",
        "corrupt_share",
        "strongest_top1_linkage",
        "lowest_entropy_normalised_mean",
    ] {
        assert!(report[key].is_number(), "missing {key}: {report}");
    }
    // The headline is the strongest adversary's figure.
    let strongest = report["strongest_top1_linkage"].as_f64().unwrap();
    for key in ["top1_linkage", "path_aware_top1_linkage", "rate_aware_top1_linkage"] {
        assert!(strongest >= report[key].as_f64().unwrap(), "{key}: {report}");
    }
    assert!(report["strongest_adversary"].is_string(), "{report}");
    assert_eq!(report["mode"], "random");
    assert_eq!(report["delivered"], report["messages"], "{report}");
    let refused = mixnode(&["sim", "mix", "--corrupt", "1.5"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("shares from 0 to 1"));
    let unknown = mixnode(&["sim", "mix", "--set", "delay=3"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no setting named \"delay\""));
}

#[test]
fn sim_mix_sweeps_print_one_row_per_setting() {
    let out = mixnode(&[
        "sim",
        "mix",
        "--json",
        "--scenario",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/scenarios/mix-testnet-defaults.toml"),
        "--sweep",
        "hop_delay_ms=0,50",
        "--sweep",
        "paths=random,rtt",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["setting"], serde_json::json!([["hop_delay_ms", "50"], ["paths", "rtt"]]));
    assert_eq!(rows[3]["mode"], "rtt");
    assert_eq!(rows[3]["hop_delay_ms"], 50.0);
    for row in &rows {
        assert_eq!(row["replies"]["delivered"], 100, "{row}");
    }
    // Mixing delays buy anonymity.
    let entropy = |r: &serde_json::Value| r["entropy_normalised_mean"].as_f64().unwrap();
    assert!(entropy(&rows[2]) > entropy(&rows[0]), "{rows:?}");
}

#[test]
fn sim_mix_writes_the_observers_trace_apart_from_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let out = mixnode(&[
        "sim",
        "mix",
        "--scenario",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../sim/scenarios/mix-testnet-defaults.toml"),
        "--set",
        "cover=loops",
        "--trace",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let links = std::fs::read_to_string(dir.path().join("links.csv")).unwrap();
    let truth = std::fs::read_to_string(dir.path().join("truth.csv")).unwrap();
    let nodes = std::fs::read_to_string(dir.path().join("nodes.csv")).unwrap();
    let mut links = links.lines();
    assert_eq!(links.next(), Some("sent_us,arrived_us,from,to"));
    let mut truth = truth.lines();
    assert_eq!(truth.next(), Some("row,packet,kind,flow,answers,sender,receiver"));
    let (links, truth): (Vec<_>, Vec<_>) = (links.collect(), truth.collect());
    assert_eq!(links.len(), truth.len());
    assert!(links.len() >= 900, "{} rows", links.len());
    // The observer's file holds times and nodes only.
    assert!(
        links
            .iter()
            .all(|l| l.split(',').count() == 4 && l.split(',').all(|f| f.parse::<u64>().is_ok()))
    );
    let kinds: std::collections::HashSet<&str> =
        truth.iter().map(|l| l.split(',').nth(2).unwrap()).collect();
    for kind in ["request", "reply", "cover"] {
        assert!(kinds.contains(kind), "{kinds:?}");
    }
    assert_eq!(nodes.lines().count(), 9);
}

#[test]
fn sim_mix_plots_entropy_and_latency_as_svg() {
    let dir = tempfile::tempdir().unwrap();
    let out = mixnode(&[
        "sim",
        "mix",
        "--nodes",
        "10",
        "--messages",
        "100",
        "--set",
        "warmup_s=0",
        "--plot",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sweeps.json")).unwrap())
            .unwrap();
    // 7 delays, 6 cover rates, 4 path modes.
    assert_eq!(rows.len(), 17);
    for chart in ["delay.svg", "cover.svg", "paths.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        assert!(svg.contains("normalised entropy") && svg.contains("latency p50"), "{chart}");
    }
}

#[test]
fn testnet_streams_a_megabyte_bit_exact_over_three_hops() {
    let out = mixnode(&[
        "testnet",
        "--json",
        "--nodes",
        "6",
        "--messages",
        "5",
        "--requests",
        "0",
        "--delay-ms",
        "2",
        "--stream-bytes",
        "1048576",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["wire"], "lip-183", "the default: {report}");
    let stream = &report["stream"];
    assert_eq!(stream["bit_exact"], true, "{report}");
    assert_eq!(stream["received"], 1_048_576);
    // The acceptor's digest came back on the stream, through the opener's SURBs.
    assert_eq!(stream["reply_verified"], true, "{report}");
    assert_eq!(stream["message_delivered"], true, "{report}");
    assert!(stream["error"].is_null(), "{report}");
    // 1 MiB of random bytes fills at least 273 frames of 3845 bytes.
    assert!(stream["frames_sent"].as_u64().unwrap() >= 273, "{report}");
}

/// Reads `child`'s stderr until a line starting with `prefix`; returns the rest of it.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prefix: &str,
) -> String {
    for line in lines.by_ref().take(200) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
    panic!("no line starting with {prefix:?}");
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn send_file_reaches_receive_bit_exact_through_a_testnet() {
    use std::io::BufRead;
    use std::process::Stdio;
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mixnode"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A testnet that stays up, and tells where to join it.
    let mut testnet = Killed(spawn(&[
        "testnet",
        "--nodes",
        "6",
        "--messages",
        "5",
        "--requests",
        "0",
        "--stream-bytes",
        "0",
        "--delay-ms",
        "2",
        "--keep-running",
    ]));
    let mut lines = std::io::BufReader::new(testnet.0.stderr.take().unwrap()).lines();
    let bootstrap = wait_for_line(&mut lines, "bootstrap:");

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Killed(spawn(&[
        "receive",
        "--dir",
        dir.path().to_str().unwrap(),
        "--bootstrap",
        &bootstrap,
        "--count",
        "1",
    ]));
    let mut rx_lines = std::io::BufReader::new(receiver.0.stderr.take().unwrap()).lines();
    let to = wait_for_line(&mut rx_lines, "to:");
    let key = wait_for_line(&mut rx_lines, "key:");

    let file = dir.path().join("payload.bin");
    let data: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let out = mixnode(&[
        "send-file",
        file.to_str().unwrap(),
        "--to",
        &to,
        "--key",
        &key,
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("verified by the receiver's SHA-256"), "{report}");
    // The receiver saves it under its own name, next to where it was read from (a new name,
    // since the original is there).
    let status = receiver.0.wait().unwrap();
    assert!(status.success());
    let saved = std::fs::read(dir.path().join("payload.bin.1")).unwrap();
    assert!(saved == data, "the received file differs");

    // A wrong key is refused before anything is sent.
    let out = mixnode(&[
        "send-file",
        file.to_str().unwrap(),
        "--to",
        &to,
        "--key",
        "00",
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(!out.status.success());
}
