//! The reference test vectors (copied from the Nim reference's output into tests/vectors/).

use mix_sphinx::PayloadCipher;
use mix_sphinx::vectors::{FileReport, verify_json};

const AES_CTR: &str = include_str!("vectors/sphinx-aes-ctr.json");
const LIONESS: &str = include_str!("vectors/sphinx-lioness.json");

fn assert_all_pass(report: &FileReport) {
    for case in &report.cases {
        assert!(
            case.failures.is_empty(),
            "{} case {:?} failed: {:#?}",
            case.section,
            case.name,
            case.failures
        );
    }
}

/// Each case compares every field the format defines; a verifier that silently skipped some
/// would show fewer checks here. `pattern`: 3 public keys, the last delay, 3 alphas and 3
/// secrets, the packet, 3 fields for each of 2 hops, 2 exit fields, 5 tampering checks = 24;
/// the other forward case adds 4 multiaddrs and 5 framing fields.
fn checks_per_case(report: &FileReport) -> Vec<(&'static str, &str, usize)> {
    report.cases.iter().map(|c| (c.section, c.name.as_str(), c.checks)).collect()
}

#[test]
fn aes_ctr_vectors_pass() {
    let report = verify_json(AES_CTR).unwrap();
    assert_eq!(report.cipher, PayloadCipher::AesCtr);
    assert_eq!(report.cases.len(), 5);
    assert_all_pass(&report);
    assert_eq!(
        checks_per_case(&report),
        [
            ("forward", "pattern", 24),
            ("forward", "random-keys-localhost-tcp", 33),
            ("surb", "surb-localhost-tcp", 23),
            ("framing", "p1-ping-no-surb", 5),
            ("framing", "p2-lightpush-one-surb", 6),
        ]
    );
}

#[test]
fn lioness_vectors_pass() {
    let report = verify_json(LIONESS).unwrap();
    assert_eq!(report.cipher, PayloadCipher::Lioness);
    assert_all_pass(&report);
    assert_eq!(report.passed(), 5);
}

#[test]
fn a_wrong_expected_byte_is_reported_by_case_and_field() {
    let mut json: serde_json::Value = serde_json::from_str(LIONESS).unwrap();
    let packet = json["forward"][0]["expected"]["after_hop"][1].as_str().unwrap().to_owned();
    let mut bytes = hex::decode(packet).unwrap();
    bytes[700] ^= 1;
    json["forward"][0]["expected"]["after_hop"][1] = hex::encode(bytes).into();
    let report = verify_json(&json.to_string()).unwrap();
    assert!(!report.is_ok());
    let failed: Vec<_> = report
        .cases
        .iter()
        .flat_map(|c| c.failures.iter().map(move |f| (c.name.as_str(), f.field.as_str())))
        .collect();
    // Hop 1's output no longer matches, and hop 2 (fed the corrupted bytes) fails its MAC.
    assert_eq!(
        failed,
        [("pattern", "expected.after_hop[1]"), ("pattern", "expected.exit_message")]
    );
    let detail = &report.cases[0].failures[0].detail;
    assert!(detail.contains("byte 700 (delta)"), "{detail}");
}

#[test]
fn wrong_sizes_and_unknown_formats_are_errors_not_panics() {
    let mut json: serde_json::Value = serde_json::from_str(AES_CTR).unwrap();
    json["forward"][0]["node_private_keys"][1] = "00".into();
    json["surb"][0]["expected_after_hop"] = serde_json::json!([]);
    json["framing"][0]["padding"] = "p9".into();
    let report = verify_json(&json.to_string()).unwrap();
    assert_eq!(report.passed(), 2);
    let fields: Vec<_> =
        report.cases.iter().filter_map(|c| c.failures.first()).map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["node_private_keys[1]", "expected_after_hop", "expected_m.padding"]);

    assert!(verify_json("{}").is_err());
    let mut json: serde_json::Value = serde_json::from_str(AES_CTR).unwrap();
    json["payload_cipher"] = "rot13".into();
    assert!(verify_json(&json.to_string()).is_err());
}
