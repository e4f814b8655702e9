//! Reader and verifier for `mix-sphinx-vectors/1` files: Sphinx test vectors produced by the Nim
//! reference implementation (see `tests/vectors/README.md` in the repository for the format).
//!
//! [`verify_json`] recomputes every expected field of every case from its inputs and reports
//! each mismatch by case and field. It also runs the negative checks the format describes
//! (tampered headers and payloads). Inputs of the wrong size are reported, never a panic.

use serde::Deserialize;

use crate::address::AddressBlock;
use crate::error::ProcessError;
use crate::format::{Padding, PayloadCipher, WireFormat};
use crate::hop::Action;
use crate::keys::{EphemeralSecret, NodePublicKey, NodeSecretKey};
use crate::message;
use crate::packet::Packet;
use crate::params::{
    ALPHA_SIZE, BETA_SIZE, HEADER_SIZE, INTEGRITY_PREFIX_SIZE, MESSAGE_SIZE, PACKET_SIZE, SURB_SIZE,
};
use crate::route::{Hop, Route};
use crate::surb::{Surb, SurbId, SurbKey, SurbSecrets};

/// The `format` value this module reads.
pub const FORMAT: &str = "mix-sphinx-vectors/1";

/// A file that cannot be read as vectors at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VectorError {
    /// Not JSON, or a field of the wrong type.
    #[error("not a vector file: {0}")]
    Json(#[from] serde_json::Error),
    /// A `format` other than [`FORMAT`].
    #[error("unknown format {0:?}, expected {FORMAT:?}")]
    Format(String),
    /// A `payload_cipher` other than `aes-ctr` or `lioness`.
    #[error("unknown payload_cipher {0:?}, expected \"aes-ctr\" or \"lioness\"")]
    Cipher(String),
}

/// The outcome for one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The payload cipher the file declares.
    pub cipher: PayloadCipher,
    /// One entry per case, in file order.
    pub cases: Vec<CaseReport>,
}

impl FileReport {
    /// Cases with no failure.
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failures.is_empty()).count()
    }

    /// Whether every case passed.
    pub fn is_ok(&self) -> bool {
        self.passed() == self.cases.len()
    }
}

/// The outcome for one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// `forward`, `surb` or `framing`.
    pub section: &'static str,
    /// The case's `name`.
    pub name: String,
    /// How many fields and behaviours were compared.
    pub checks: usize,
    /// What did not match.
    pub failures: Vec<Failure>,
}

/// One field that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The field's path in the case, e.g. `expected.after_hop[1]`.
    pub field: String,
    /// What was wrong.
    pub detail: String,
}

/// Parses `text` and verifies every case in it.
pub fn verify_json(text: &str) -> Result<FileReport, VectorError> {
    let file: File = serde_json::from_str(text)?;
    if file.format != FORMAT {
        return Err(VectorError::Format(file.format));
    }
    let cipher = match file.payload_cipher.as_str() {
        "aes-ctr" => PayloadCipher::AesCtr,
        "lioness" => PayloadCipher::Lioness,
        other => return Err(VectorError::Cipher(other.to_owned())),
    };
    let mut cases = Vec::new();
    for case in &file.forward {
        cases.push(run_case("forward", &case.name, |c| verify_forward(c, cipher, case)));
    }
    for case in &file.surb {
        cases.push(run_case("surb", &case.name, |c| verify_surb(c, cipher, case)));
    }
    for case in &file.framing {
        cases.push(run_case("framing", &case.name, |c| verify_framing(c, case)));
    }
    Ok(FileReport { cipher, cases })
}

// ---------------------------------------------------------------------------------------------
// File format.

#[derive(Deserialize)]
struct File {
    format: String,
    payload_cipher: String,
    #[serde(default)]
    forward: Vec<ForwardCase>,
    #[serde(default)]
    surb: Vec<SurbCase>,
    #[serde(default)]
    framing: Vec<FramingCase>,
}

#[derive(Deserialize)]
struct ForwardCase {
    name: String,
    path_length: Option<usize>,
    node_private_keys: Vec<Hex>,
    node_public_keys: Vec<Hex>,
    ephemeral_secret: Hex,
    hop_addresses: Vec<Hex>,
    destination: Hex,
    delays_ms: Vec<u16>,
    message: Hex,
    expected: ForwardExpected,
    debug: Option<DebugValues>,
    info: Option<ForwardInfo>,
}

#[derive(Deserialize)]
struct ForwardExpected {
    packet: Hex,
    after_hop: Vec<Hex>,
    hop_delays_ms: Vec<u16>,
    hop_next_addresses: Vec<Hex>,
    exit_destination: Hex,
    exit_message: Hex,
}

#[derive(Deserialize)]
struct DebugValues {
    #[serde(default)]
    alphas: Vec<Hex>,
    #[serde(default)]
    shared_secrets: Vec<Hex>,
}

#[derive(Deserialize)]
struct ForwardInfo {
    hop_multiaddrs: Option<Vec<AddressInfo>>,
    destination_multiaddr: Option<AddressInfo>,
    message_framing: Option<FramingInputs>,
}

#[derive(Deserialize)]
struct AddressInfo {
    multiaddr: String,
    peer_id: String,
}

#[derive(Deserialize)]
struct FramingInputs {
    padding: String,
    codec: String,
    #[serde(default)]
    surbs: Vec<Hex>,
    app_message: Hex,
    seqno: Option<u32>,
}

#[derive(Deserialize)]
struct SurbCase {
    name: String,
    path_length: Option<usize>,
    return_path_private_keys: Vec<Hex>,
    return_path_public_keys: Vec<Hex>,
    return_hop_addresses: Vec<Hex>,
    ephemeral_secret: Hex,
    surb_id: Hex,
    surb_key: Hex,
    delays_ms: Vec<u16>,
    expected_surb: Hex,
    reply_message: Hex,
    expected_reply_packet: Hex,
    expected_after_hop: Vec<Hex>,
    expected_recovered_message: Hex,
    debug: Option<DebugValues>,
    info: Option<SurbInfo>,
}

#[derive(Deserialize)]
struct SurbInfo {
    return_hop_multiaddrs: Option<Vec<AddressInfo>>,
    reply_framing: Option<ReplyFraming>,
}

#[derive(Deserialize)]
struct ReplyFraming {
    padding: String,
    codec: String,
    reply_app_message: Hex,
    seqno: Option<u32>,
}

#[derive(Deserialize)]
struct FramingCase {
    name: String,
    #[serde(flatten)]
    inputs: FramingInputs,
    expected_m: Hex,
}

/// Hex bytes, decoded while parsing.
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map(Hex).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Checking.

/// Collects the outcome of one case. A check that cannot continue (an input of the wrong size)
/// returns `Err(Stop)` after recording why.
struct Checker {
    checks: usize,
    failures: Vec<Failure>,
}

struct Stop;

type Step<T = ()> = Result<T, Stop>;

impl Checker {
    fn fail(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.failures.push(Failure { field: field.into(), detail: detail.into() });
    }

    /// Compares bytes and names the first differing offset.
    fn bytes(&mut self, field: impl Into<String>, got: &[u8], expected: &[u8]) {
        self.checks += 1;
        if got == expected {
            return;
        }
        let field = field.into();
        let detail = if got.len() != expected.len() {
            format!("length {} != expected {}", got.len(), expected.len())
        } else {
            let at = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
            let region = if expected.len() == PACKET_SIZE { packet_region(at) } else { "" };
            format!("first difference at byte {at}{region}")
        };
        self.fail(field, detail);
    }

    fn equal<T: PartialEq + core::fmt::Debug>(
        &mut self,
        field: impl Into<String>,
        got: T,
        expected: T,
    ) {
        self.checks += 1;
        if got != expected {
            self.fail(field, format!("got {got:?}, expected {expected:?}"));
        }
    }

    fn sized<const N: usize>(&mut self, field: &str, bytes: &Hex) -> Step<[u8; N]> {
        bytes.0.as_slice().try_into().map_err(|_| {
            self.fail(field, format!("must be {N} bytes, got {}", bytes.0.len()));
            Stop
        })
    }

    fn count<T>(&mut self, field: &str, items: &[T], expected: usize) -> Step {
        if items.len() == expected {
            return Ok(());
        }
        self.fail(field, format!("has {} entries, expected {expected}", items.len()));
        Err(Stop)
    }

    fn ok<T, E: core::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Step<T> {
        result.map_err(|e| {
            self.fail(field, e.to_string());
            Stop
        })
    }
}

fn run_case(section: &'static str, name: &str, f: impl FnOnce(&mut Checker) -> Step) -> CaseReport {
    let mut checker = Checker { checks: 0, failures: Vec::new() };
    let _ = f(&mut checker);
    CaseReport {
        section,
        name: name.to_owned(),
        checks: checker.checks,
        failures: checker.failures,
    }
}

fn packet_region(at: usize) -> &'static str {
    match at {
        a if a < ALPHA_SIZE => " (alpha)",
        a if a < ALPHA_SIZE + BETA_SIZE => " (beta)",
        a if a < HEADER_SIZE => " (gamma)",
        _ => " (delta)",
    }
}

/// Checks each public key against its private key and returns the validated keys.
fn key_pairs(
    c: &mut Checker,
    prefix: &str,
    privates: &[Hex],
    publics: &[Hex],
    len: usize,
) -> Step<(Vec<NodeSecretKey>, Vec<NodePublicKey>)> {
    c.count(&format!("{prefix}_private_keys"), privates, len)?;
    c.count(&format!("{prefix}_public_keys"), publics, len)?;
    let mut secrets = Vec::with_capacity(len);
    let mut pubs = Vec::with_capacity(len);
    for i in 0..len {
        let field = format!("{prefix}_public_keys[{i}]");
        let secret = NodeSecretKey::from_bytes(
            c.sized(&format!("{prefix}_private_keys[{i}]"), &privates[i])?,
        );
        let public: [u8; 32] = c.sized(&field, &publics[i])?;
        c.bytes(field.clone(), &public, secret.public_key().as_bytes());
        pubs.push(c.ok(&field, NodePublicKey::from_bytes(public))?);
        secrets.push(secret);
    }
    Ok((secrets, pubs))
}

fn build_route(
    c: &mut Checker,
    keys: &[NodePublicKey],
    addresses_field: &str,
    addresses: &[Hex],
    delays: &[u16],
) -> Step<Route> {
    let len = keys.len();
    c.count(addresses_field, addresses, len)?;
    c.count("delays_ms", delays, len)?;
    c.equal("delays_ms (last entry)", delays[len - 1], 0);
    let mut hops = Vec::with_capacity(len);
    for (i, key) in keys.iter().enumerate() {
        let address = c.sized(&format!("{addresses_field}[{i}]"), &addresses[i])?;
        hops.push(Hop { public_key: *key, address: AddressBlock::from_bytes(address) });
    }
    c.ok("delays_ms", Route::allowing_zero_delay(hops, delays[..len - 1].to_vec()))
}

fn check_debug(c: &mut Checker, debug: Option<&DebugValues>, route: &Route, x: &EphemeralSecret) {
    let Some(debug) = debug else { return };
    let Ok(path) =
        crate::header::PathSecrets::derive(x, route.hops().iter().map(|h| &h.public_key))
    else {
        return;
    };
    for (i, alpha) in debug.alphas.iter().enumerate().take(route.len()) {
        c.bytes(format!("debug.alphas[{i}]"), &path.alphas()[i], &alpha.0);
    }
    for (i, secret) in debug.shared_secrets.iter().enumerate().take(route.len()) {
        c.bytes(format!("debug.shared_secrets[{i}]"), &path.secrets()[i], &secret.0);
    }
}

fn check_multiaddrs(c: &mut Checker, field: &str, infos: &[AddressInfo], blocks: &[Hex]) {
    for (i, (info, block)) in infos.iter().zip(blocks).enumerate() {
        let name = format!("{field}[{i}]");
        let encoded = info.multiaddr.parse().map_err(|e| format!("{e}")).and_then(|addr| {
            let peer = info.peer_id.parse().map_err(|e| format!("{e}"))?;
            AddressBlock::encode(&addr, &peer).map_err(|e| e.to_string())
        });
        match encoded {
            Ok(encoded) => c.bytes(name, encoded.as_bytes(), &block.0),
            Err(e) => {
                c.checks += 1;
                c.fail(name, e);
            }
        }
    }
}

fn padding_of(c: &mut Checker, field: &str, name: &str) -> Step<Padding> {
    match name {
        "p1-seqno" => Ok(Padding::SeqNo),
        "p2" => Ok(Padding::Plain),
        other => {
            c.fail(field, format!("unknown padding {other:?}"));
            Err(Stop)
        }
    }
}

/// Runs `packet` through hops `from..` with `keys` and returns each hop's outcome.
fn run_hop(
    format: &WireFormat,
    key: &NodeSecretKey,
    packet: &mut Packet,
) -> Result<Action, ProcessError> {
    key.process(format, packet).map(|(_, action)| action)
}

fn verify_forward(c: &mut Checker, cipher: PayloadCipher, case: &ForwardCase) -> Step {
    let len = case.path_length.unwrap_or(case.node_private_keys.len());
    let format = WireFormat::new(cipher, Padding::default()).with_max_path_len(len);
    let (secrets, publics) =
        key_pairs(c, "node", &case.node_private_keys, &case.node_public_keys, len)?;
    let route = build_route(c, &publics, "hop_addresses", &case.hop_addresses, &case.delays_ms)?;
    let destination = AddressBlock::from_bytes(c.sized("destination", &case.destination)?);
    let message: [u8; MESSAGE_SIZE] = c.sized("message", &case.message)?;
    let x = EphemeralSecret::from_bytes(c.sized("ephemeral_secret", &case.ephemeral_secret)?);
    let expected = &case.expected;

    // Sender side.
    check_debug(c, case.debug.as_ref(), &route, &x);
    match route.forward_packet_with_secret(&format, &destination, &message, &x) {
        Ok(packet) => c.bytes("expected.packet", packet.as_bytes(), &expected.packet.0),
        Err(e) => c.fail("expected.packet", format!("construction failed: {e}")),
    }

    // Every hop, each from the expected input bytes.
    c.count("expected.after_hop", &expected.after_hop, len - 1)?;
    c.count("expected.hop_delays_ms", &expected.hop_delays_ms, len - 1)?;
    c.count("expected.hop_next_addresses", &expected.hop_next_addresses, len - 1)?;
    let inputs: Vec<&Hex> = core::iter::once(&expected.packet).chain(&expected.after_hop).collect();
    for i in 0..len - 1 {
        let input_field = if i == 0 {
            "expected.packet".to_owned()
        } else {
            format!("expected.after_hop[{}]", i - 1)
        };
        let mut packet = c.ok(&input_field, Packet::from_slice(&inputs[i].0))?;
        match run_hop(&format, &secrets[i], &mut packet) {
            Ok(Action::Forward { next_hop, delay_ms }) => {
                c.equal(
                    format!("expected.hop_delays_ms[{i}]"),
                    delay_ms,
                    expected.hop_delays_ms[i],
                );
                c.bytes(
                    format!("expected.hop_next_addresses[{i}]"),
                    next_hop.as_bytes(),
                    &expected.hop_next_addresses[i].0,
                );
                c.bytes(
                    format!("expected.after_hop[{i}]"),
                    packet.as_bytes(),
                    &expected.after_hop[i].0,
                );
            }
            other => c.fail(
                format!("expected.after_hop[{i}]"),
                format!("hop {i} gave {other:?}, expected Forward"),
            ),
        }
    }
    let last_input = format!("expected.after_hop[{}]", len - 2);
    let mut packet = c.ok(&last_input, Packet::from_slice(&inputs[len - 1].0))?;
    match run_hop(&format, &secrets[len - 1], &mut packet) {
        Ok(Action::Deliver { destination }) => {
            c.bytes(
                "expected.exit_destination",
                destination.as_bytes(),
                &expected.exit_destination.0,
            );
            c.bytes("expected.exit_message", packet.message(), &expected.exit_message.0);
        }
        other => c.fail("expected.exit_message", format!("exit gave {other:?}, expected Deliver")),
    }

    check_tampering(c, &format, &secrets, &expected.packet, &message)?;

    if let Some(info) = &case.info {
        if let Some(hops) = &info.hop_multiaddrs {
            check_multiaddrs(c, "info.hop_multiaddrs", hops, &case.hop_addresses);
        }
        if let Some(dest) = &info.destination_multiaddr {
            check_multiaddrs(
                c,
                "info.destination_multiaddr",
                core::slice::from_ref(dest),
                core::slice::from_ref(&case.destination),
            );
        }
        if let Some(framing) = &info.message_framing {
            check_framing(c, "info.message_framing", framing, &message)?;
        }
    }
    Ok(())
}

/// Runs a tampered copy of the expected packet through every hop and returns where it stopped.
fn run_path(
    format: &WireFormat,
    keys: &[NodeSecretKey],
    bytes: &[u8],
) -> Result<(usize, Packet), (usize, ProcessError)> {
    let mut packet = Packet::from_slice(bytes).map_err(|_| (0, ProcessError::MacMismatch))?;
    for (i, key) in keys.iter().enumerate() {
        match run_hop(format, key, &mut packet) {
            Ok(Action::Forward { .. }) => {}
            Ok(_) => return Ok((i, packet)),
            Err(e) => return Err((i, e)),
        }
    }
    Err((keys.len(), ProcessError::MalformedFinalBlock))
}

/// The negative checks of the format README: header flips fail the first MAC; payload flips
/// are caught at the exit, except that AES-CTR lets a flip outside the prefix through.
fn check_tampering(
    c: &mut Checker,
    format: &WireFormat,
    keys: &[NodeSecretKey],
    packet: &Hex,
    message: &[u8; MESSAGE_SIZE],
) -> Step {
    if packet.0.len() != PACKET_SIZE {
        return Ok(());
    }
    let flipped = |at: usize, mask: u8| {
        let mut b = packet.0.clone();
        b[at] ^= mask;
        b
    };
    for (what, at) in
        [("alpha", 0), ("beta", ALPHA_SIZE + 100), ("gamma", ALPHA_SIZE + BETA_SIZE + 5)]
    {
        let outcome = run_path(format, keys, &flipped(at, 0x01)).map(|(hop, _)| hop);
        c.equal(
            format!("negative: flipped {what} bit"),
            outcome,
            Err((0, ProcessError::MacMismatch)),
        );
    }
    let exit = keys.len() - 1;
    let in_prefix = HEADER_SIZE + 3;
    let outcome = run_path(format, keys, &flipped(in_prefix, 0x10)).map(|(hop, _)| hop);
    c.equal(
        "negative: flipped payload prefix bit",
        outcome,
        Err((exit, ProcessError::PayloadIntegrity)),
    );

    let in_message = HEADER_SIZE + INTEGRITY_PREFIX_SIZE + 100;
    let field = "negative: flipped payload bit outside the prefix";
    match (format.cipher(), run_path(format, keys, &flipped(in_message, 0x04))) {
        (PayloadCipher::AesCtr, Ok((hop, delivered))) if hop == exit => {
            let mut expected = *message;
            expected[100] ^= 0x04;
            c.bytes(
                format!("{field} (AES-CTR is malleable: the same bit flips in m)"),
                delivered.message(),
                &expected,
            );
        }
        (PayloadCipher::Lioness, outcome) => {
            c.equal(
                field,
                outcome.map(|(hop, _)| hop),
                Err((exit, ProcessError::PayloadIntegrity)),
            );
        }
        (_, outcome) => {
            c.fail(field, format!("unexpected outcome {:?}", outcome.map(|(hop, _)| hop)))
        }
    }
    Ok(())
}

fn check_framing(c: &mut Checker, field: &str, inputs: &FramingInputs, expected_m: &[u8]) -> Step {
    let padding = padding_of(c, &format!("{field}.padding"), &inputs.padding)?;
    let mut surbs = Vec::with_capacity(inputs.surbs.len());
    for (i, s) in inputs.surbs.iter().enumerate() {
        surbs.push(c.ok(&format!("{field}.surbs[{i}]"), Surb::from_slice(&s.0))?);
    }
    let mut m = [0u8; MESSAGE_SIZE];
    let seqno = inputs.seqno.unwrap_or(0);
    match message::encode_forward(
        padding,
        seqno,
        &inputs.codec,
        &surbs,
        &inputs.app_message.0,
        &mut m,
    ) {
        Ok(()) => c.bytes(format!("{field} (encoded m)"), &m, expected_m),
        Err(e) => c.fail(format!("{field} (encoded m)"), e.to_string()),
    }
    let expected_m: [u8; MESSAGE_SIZE] =
        c.ok(&format!("{field} (m)"), expected_m.try_into().map_err(|_| "m must be 3968 bytes"))?;
    match message::decode_forward(padding, &expected_m) {
        Ok(decoded) => {
            c.equal(format!("{field}.codec (decoded)"), decoded.codec, inputs.codec.as_str());
            c.equal(format!("{field}.surbs (decoded count)"), decoded.surbs.len(), surbs.len());
            for (i, (got, want)) in decoded.surbs.iter().zip(&surbs).enumerate() {
                c.bytes(
                    format!("{field}.surbs[{i}] (decoded)"),
                    &*got.to_bytes(),
                    &*want.to_bytes(),
                );
            }
            c.bytes(format!("{field}.app_message (decoded)"), decoded.body, &inputs.app_message.0);
            c.equal(
                format!("{field}.seqno (decoded)"),
                decoded.seqno,
                inputs.seqno.filter(|_| padding == Padding::SeqNo),
            );
        }
        Err(e) => c.fail(format!("{field} (decode)"), e.to_string()),
    }
    Ok(())
}

fn verify_surb(c: &mut Checker, cipher: PayloadCipher, case: &SurbCase) -> Step {
    let len = case.path_length.unwrap_or(case.return_path_private_keys.len());
    let format = WireFormat::new(cipher, Padding::default()).with_max_path_len(len);
    let (secrets, publics) = key_pairs(
        c,
        "return_path",
        &case.return_path_private_keys,
        &case.return_path_public_keys,
        len,
    )?;
    let route = build_route(
        c,
        &publics,
        "return_hop_addresses",
        &case.return_hop_addresses,
        &case.delays_ms,
    )?;
    let x = EphemeralSecret::from_bytes(c.sized("ephemeral_secret", &case.ephemeral_secret)?);
    let id = SurbId::from_bytes(c.sized("surb_id", &case.surb_id)?);
    let key = SurbKey::from_bytes(c.sized("surb_key", &case.surb_key)?);
    let reply: [u8; MESSAGE_SIZE] = c.sized("reply_message", &case.reply_message)?;

    // Initiator: build.
    check_debug(c, case.debug.as_ref(), &route, &x);
    let (surb, kept) = c.ok("expected_surb", route.surb_with_secret(&format, id, key, &x))?;
    c.bytes("expected_surb", &*surb.to_bytes(), &case.expected_surb.0);

    // Exit: use the expected SURB.
    let expected_surb: [u8; SURB_SIZE] = c.sized("expected_surb", &case.expected_surb)?;
    let reply_packet = Surb::from_bytes(&expected_surb).reply_packet(&format, &reply);
    c.bytes("expected_reply_packet", reply_packet.as_bytes(), &case.expected_reply_packet.0);

    // Return hops, each from the expected bytes.
    c.count("expected_after_hop", &case.expected_after_hop, len - 1)?;
    let inputs: Vec<&Hex> =
        core::iter::once(&case.expected_reply_packet).chain(&case.expected_after_hop).collect();
    for i in 0..len - 1 {
        let mut packet = c.ok("expected_reply_packet", Packet::from_slice(&inputs[i].0))?;
        match run_hop(&format, &secrets[i], &mut packet) {
            Ok(Action::Forward { .. }) => {
                c.bytes(
                    format!("expected_after_hop[{i}]"),
                    packet.as_bytes(),
                    &case.expected_after_hop[i].0,
                );
            }
            other => c.fail(
                format!("expected_after_hop[{i}]"),
                format!("hop {i} gave {other:?}, expected Forward"),
            ),
        }
    }

    // Initiator: its own hop reports the reply, then it recovers m.
    let mut packet = c.ok("expected_after_hop", Packet::from_slice(&inputs[len - 1].0))?;
    match run_hop(&format, &secrets[len - 1], &mut packet) {
        Ok(Action::Reply { id: got }) => {
            c.equal("surb_id (reported by the initiator's hop)", got, id);
            let wrong = wrong_key_secrets(&route, &format, id, &x);
            let mut copy = packet.clone();
            match kept.recover(&format, &mut packet) {
                Ok(m) => {
                    c.bytes("expected_recovered_message", m, &case.expected_recovered_message.0)
                }
                Err(e) => c.fail("expected_recovered_message", e.to_string()),
            }
            if let Some(wrong) = wrong {
                c.equal(
                    "negative: recovery under a wrong SURB key",
                    wrong.recover(&format, &mut copy).is_err(),
                    true,
                );
            }
        }
        other => {
            c.fail("expected_recovered_message", format!("last hop gave {other:?}, expected Reply"))
        }
    }

    if let Some(info) = &case.info {
        if let Some(hops) = &info.return_hop_multiaddrs {
            check_multiaddrs(c, "info.return_hop_multiaddrs", hops, &case.return_hop_addresses);
        }
        if let Some(framing) = &info.reply_framing {
            let field = "info.reply_framing";
            let padding = padding_of(c, &format!("{field}.padding"), &framing.padding)?;
            c.equal(format!("{field}.codec"), framing.codec.as_str(), "");
            let mut m = [0u8; MESSAGE_SIZE];
            match message::encode_reply(
                padding,
                framing.seqno.unwrap_or(0),
                &framing.reply_app_message.0,
                &mut m,
            ) {
                Ok(()) => c.bytes(format!("{field} (encoded reply m)"), &m, &reply),
                Err(e) => c.fail(format!("{field} (encoded reply m)"), e.to_string()),
            }
            match message::decode_reply(padding, &reply) {
                Ok((body, _)) => c.bytes(
                    format!("{field}.reply_app_message (decoded)"),
                    body,
                    &framing.reply_app_message.0,
                ),
                Err(e) => c.fail(format!("{field} (decode)"), e.to_string()),
            }
        }
    }
    Ok(())
}

fn wrong_key_secrets(
    route: &Route,
    format: &WireFormat,
    id: SurbId,
    x: &EphemeralSecret,
) -> Option<SurbSecrets> {
    route.surb_with_secret(format, id, SurbKey::from_bytes([0x5a; 16]), x).ok().map(|(_, s)| s)
}

fn verify_framing(c: &mut Checker, case: &FramingCase) -> Step {
    check_framing(c, "expected_m", &case.inputs, &case.expected_m.0)
}
