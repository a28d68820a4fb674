//! NTLM (MS-NLMP) HTTP authentication as IIS in front of Exchange answers
//! it, written from the specification (MS-NLMP 2.2.1 message layouts,
//! 2.2.2.1 AV pairs, 3.2.5.1 server behaviour, 3.3.2 NTLMv2), not from any
//! client: the message parsing and the checks are this module's own, the
//! primitives (MD4, HMAC-MD5) are RustCrypto's.
//!
//! NTLM authenticates a connection: `Authorization: NTLM <NEGOTIATE>` is
//! answered 401 with `WWW-Authenticate: NTLM <CHALLENGE>` (a random server
//! challenge, target info with `MsvAvTimestamp`), and the AUTHENTICATE on
//! the same connection is checked against that challenge. Afterwards the
//! connection is the user's, with or without a header. State is per
//! connection ([`ConnId`], one per accepted TCP connection): an
//! AUTHENTICATE on another connection than its CHALLENGE finds no challenge
//! and gets 401. Only NTLMv2 answers are accepted (LmCompatibilityLevel 5:
//! NTLMv1 and LM are refused). Not checked: the MIC (it needs the exported
//! session key, i.e. key exchange, which EWS over HTTP does not use).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use md4::{Digest, Md4};
use md5::Md5;
use tokio::net::TcpListener;

use crate::kit::lock;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

// NegotiateFlags (MS-NLMP 2.2.2.5).
const UNICODE: u32 = 0x0000_0001;
const OEM: u32 = 0x0000_0002;
const REQUEST_TARGET: u32 = 0x0000_0004;
const SIGN: u32 = 0x0000_0010;
const SEAL: u32 = 0x0000_0020;
const NTLM: u32 = 0x0000_0200;
const ALWAYS_SIGN: u32 = 0x0000_8000;
const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const TARGET_INFO: u32 = 0x0080_0000;
const VERSION: u32 = 0x0200_0000;
const N128: u32 = 0x2000_0000;
const KEY_EXCH: u32 = 0x4000_0000;
const N56: u32 = 0x8000_0000;

// AvId (MS-NLMP 2.2.2.1).
const AV_EOL: u16 = 0;
const AV_NB_COMPUTER: u16 = 1;
const AV_NB_DOMAIN: u16 = 2;
const AV_DNS_COMPUTER: u16 = 3;
const AV_DNS_DOMAIN: u16 = 4;
const AV_TIMESTAMP: u16 = 7;

/// 100 ns ticks between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX: i64 = 116_444_736_000_000_000;
/// MS-NLMP's MaxLifetime for an NTLMv2 timestamp: 36 hours.
const MAX_SKEW_TICKS: i64 = 36 * 3600 * 10_000_000;
/// Connections remembered at once (the oldest go first).
const MAX_CONNECTIONS: usize = 4096;

/// One accepted TCP connection (axum's connect info, made per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnId(pub(crate) u64);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl Connected<IncomingStream<'_, TcpListener>> for ConnId {
    fn connect_info(_: IncomingStream<'_, TcpListener>) -> Self {
        ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a connection has been through.
#[derive(Debug, Clone)]
enum State {
    /// A CHALLENGE went out on it.
    Challenged { server_challenge: [u8; 8] },
    /// It is `account`'s (an index into the caller's accounts).
    Authenticated { account: usize },
}

/// An account the server knows: the user name, its UPN, its password.
#[derive(Debug, Clone)]
pub(crate) struct Account<'a> {
    pub(crate) username: &'a str,
    pub(crate) upn: &'a str,
    pub(crate) password: &'a str,
}

/// What the request's NTLM headers come to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// No NTLM on this request and none on its connection.
    None,
    /// Answer 401 with this `WWW-Authenticate` value (a CHALLENGE, or a bare
    /// `NTLM` after a failure).
    Challenge(String),
    /// The connection is the account's (index into the accounts).
    Authenticated(usize),
}

/// The server side: per-connection state and the server's names.
#[derive(Debug)]
pub(crate) struct NtlmServer {
    conns: Mutex<BTreeMap<u64, State>>,
}

impl Default for NtlmServer {
    fn default() -> Self {
        Self {
            conns: Mutex::new(BTreeMap::new()),
        }
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A security buffer's bytes (Len, MaxLen, Offset at `at`).
fn field(msg: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(le16(msg, at)?);
    let off = usize::try_from(le32(msg, at + 4)?).ok()?;
    msg.get(off..off.checked_add(len)?)
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn text(bytes: &[u8], unicode: bool) -> Option<String> {
    if unicode {
        if !bytes.len().is_multiple_of(2) {
            return None;
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).ok()
    } else {
        Some(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Hmac<Md5> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with MD4(UTF-16LE(password)) of
/// UTF-16LE(UPPER(user) + domain).
pub(crate) fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash = Md4::digest(utf16(password));
    hmac_md5(&nt_hash, &[&utf16(&user.to_uppercase()), &utf16(domain)])
}

/// Now as a FILETIME.
fn filetime_now() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .map_or(FILETIME_UNIX, |n| n / 100 + FILETIME_UNIX)
}

fn av(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// The CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) answering a NEGOTIATE with
/// `client_flags`.
fn challenge_message(
    client_flags: u32,
    server_challenge: [u8; 8],
    domain: &str,
    dns_domain: &str,
    server: &str,
) -> Vec<u8> {
    let mut flags = NTLM | TARGET_INFO | REQUEST_TARGET | TARGET_TYPE_DOMAIN | VERSION;
    flags |= if client_flags & UNICODE != 0 {
        UNICODE
    } else {
        OEM
    };
    // What a Windows server grants when asked (signing and sealing keys are
    // the client's business here: nothing on HTTP is signed).
    flags |= client_flags
        & (EXTENDED_SESSIONSECURITY | ALWAYS_SIGN | SIGN | SEAL | KEY_EXCH | N128 | N56);
    let name = utf16(domain);
    let mut info = Vec::new();
    av(&mut info, AV_NB_DOMAIN, &utf16(domain));
    av(&mut info, AV_NB_COMPUTER, &utf16(server));
    av(&mut info, AV_DNS_DOMAIN, &utf16(dns_domain));
    av(
        &mut info,
        AV_DNS_COMPUTER,
        &utf16(&format!("{}.{dns_domain}", server.to_lowercase())),
    );
    av(&mut info, AV_TIMESTAMP, &filetime_now().to_le_bytes());
    av(&mut info, AV_EOL, &[]);
    let header = 56u32;
    let mut m = Vec::with_capacity(header as usize + name.len() + info.len());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&(name.len() as u16).to_le_bytes());
    m.extend_from_slice(&(name.len() as u16).to_le_bytes());
    m.extend_from_slice(&header.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&server_challenge);
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(info.len() as u16).to_le_bytes());
    m.extend_from_slice(&(header + name.len() as u32).to_le_bytes());
    // Version: Windows Server 2016 (10.0.14393), NTLMSSP revision 15.
    m.extend_from_slice(&[10, 0, 0x39, 0x38, 0, 0, 0, 15]);
    m.extend_from_slice(&name);
    m.extend_from_slice(&info);
    m
}

/// The parts of an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3) the check needs.
#[derive(Debug)]
struct Authenticate {
    nt_response: Vec<u8>,
    user: String,
    domain: String,
}

fn parse_authenticate(msg: &[u8]) -> Result<Authenticate, &'static str> {
    if msg.len() < 64 {
        return Err("AUTHENTICATE shorter than its header");
    }
    let flags = le32(msg, 60).ok_or("no flags")?;
    let unicode = flags & UNICODE != 0;
    let nt = field(msg, 20).ok_or("NtChallengeResponse outside the message")?;
    let domain = field(msg, 28).ok_or("DomainName outside the message")?;
    let user = field(msg, 36).ok_or("UserName outside the message")?;
    Ok(Authenticate {
        nt_response: nt.to_vec(),
        user: text(user, unicode).ok_or("UserName is not text")?,
        domain: text(domain, unicode).ok_or("DomainName is not text")?,
    })
}

impl NtlmServer {
    /// Forgets a connection's state past the cap (oldest first).
    fn put(&self, conn: u64, state: State) {
        let mut conns = lock(&self.conns);
        conns.insert(conn, state);
        while conns.len() > MAX_CONNECTIONS {
            conns.pop_first();
        }
    }

    /// The NTLM step of one request on connection `conn`: `header` is its
    /// `Authorization` value, `accounts` who may log on in `domain`.
    pub(crate) fn step(
        &self,
        conn: ConnId,
        header: Option<&str>,
        accounts: &[Account<'_>],
        domain: &str,
        dns_domain: &str,
    ) -> Step {
        let token = header.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("NTLM").then(|| rest.trim())
        });
        let Some(token) = token else {
            // A request without NTLM on an authenticated connection is the
            // user's (IIS keeps connection-based auth).
            return match lock(&self.conns).get(&conn.0) {
                Some(State::Authenticated { account }) if header.is_none() => {
                    Step::Authenticated(*account)
                }
                _ => Step::None,
            };
        };
        let refused = || Step::Challenge("NTLM".to_owned());
        let Ok(msg) = B64.decode(token) else {
            lock(&self.conns).remove(&conn.0);
            return refused();
        };
        if msg.get(..8) != Some(SIGNATURE.as_slice()) {
            lock(&self.conns).remove(&conn.0);
            return refused();
        }
        match le32(&msg, 8) {
            Some(1) => {
                let client_flags = le32(&msg, 12).unwrap_or(0);
                let server_challenge: [u8; 8] = rand::random();
                self.put(conn.0, State::Challenged { server_challenge });
                let c =
                    challenge_message(client_flags, server_challenge, domain, dns_domain, "EXCH01");
                Step::Challenge(format!("NTLM {}", B64.encode(c)))
            }
            Some(3) => {
                let state = lock(&self.conns).remove(&conn.0);
                let Some(State::Challenged { server_challenge }) = state else {
                    tracing::debug!(
                        conn = conn.0,
                        "NTLM AUTHENTICATE without a CHALLENGE on its connection"
                    );
                    return refused();
                };
                match verify(&msg, server_challenge, accounts, domain, dns_domain) {
                    Ok(account) => {
                        self.put(conn.0, State::Authenticated { account });
                        Step::Authenticated(account)
                    }
                    Err(why) => {
                        tracing::debug!(conn = conn.0, why, "NTLM AUTHENTICATE refused");
                        refused()
                    }
                }
            }
            _ => {
                lock(&self.conns).remove(&conn.0);
                refused()
            }
        }
    }
}

/// Checks an AUTHENTICATE against its server challenge (MS-NLMP 3.2.5.1.2
/// with NTLMv2, 3.3.2); the account's index.
fn verify(
    msg: &[u8],
    server_challenge: [u8; 8],
    accounts: &[Account<'_>],
    domain: &str,
    dns_domain: &str,
) -> Result<usize, &'static str> {
    let a = parse_authenticate(msg)?;
    // NTProofStr (16) + the NTLMv2_CLIENT_CHALLENGE (28 bytes and AV pairs);
    // 24 bytes would be NTLMv1, which this server refuses.
    if a.nt_response.len() < 16 + 28 {
        return Err("not an NTLMv2 response");
    }
    let (proof, blob) = a.nt_response.split_at(16);
    if blob[0] != 1 || blob[1] != 1 {
        return Err("NTLMv2 client challenge of another version");
    }
    let time = i64::from_le_bytes(blob[8..16].try_into().map_err(|_| "no timestamp")?);
    if (time - filetime_now()).abs() > MAX_SKEW_TICKS {
        return Err("NTLMv2 timestamp out of range");
    }
    let index = accounts
        .iter()
        .position(|x| {
            if a.domain.is_empty() {
                a.user.eq_ignore_ascii_case(x.upn) || a.user.eq_ignore_ascii_case(x.username)
            } else {
                (a.domain.eq_ignore_ascii_case(domain) || a.domain.eq_ignore_ascii_case(dns_domain))
                    && a.user.eq_ignore_ascii_case(x.username)
            }
        })
        .ok_or("unknown account")?;
    let key = ntowf_v2(accounts[index].password, &a.user, &a.domain);
    let expected = hmac_md5(&key, &[&server_challenge, blob]);
    if expected.as_slice() == proof {
        Ok(index)
    } else {
        Err("wrong password")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate() -> String {
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&(UNICODE | NTLM | EXTENDED_SESSIONSECURITY).to_le_bytes());
        m.extend_from_slice(&[0; 16]);
        format!("NTLM {}", B64.encode(m))
    }

    /// An AUTHENTICATE built from the CHALLENGE by the MS-NLMP 3.3.2 rules.
    fn authenticate(challenge: &str, user: &str, domain: &str, password: &str) -> String {
        let c = B64
            .decode(challenge.strip_prefix("NTLM ").unwrap())
            .unwrap();
        let server: [u8; 8] = c[24..32].try_into().unwrap();
        let info = field(&c, 40).unwrap().to_vec();
        let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
        blob.extend_from_slice(&filetime_now().to_le_bytes());
        blob.extend_from_slice(&[7; 8]);
        blob.extend_from_slice(&[0; 4]);
        blob.extend_from_slice(&info);
        blob.extend_from_slice(&[0; 4]);
        let proof = hmac_md5(&ntowf_v2(password, user, domain), &[&server, &blob]);
        let mut nt = proof.to_vec();
        nt.extend_from_slice(&blob);
        let (d, u) = (utf16(domain), utf16(user));
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&3u32.to_le_bytes());
        let mut off = 64u32;
        let mut payload = Vec::new();
        for f in [&[0u8; 24][..], &nt, &d, &u, &[], &[]] {
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&(f.len() as u16).to_le_bytes());
            m.extend_from_slice(&off.to_le_bytes());
            off += f.len() as u32;
            payload.extend_from_slice(f);
        }
        m.extend_from_slice(&(UNICODE | NTLM).to_le_bytes());
        m.extend_from_slice(&payload);
        format!("NTLM {}", B64.encode(m))
    }

    fn accounts() -> Vec<Account<'static>> {
        vec![Account {
            username: "svc-bridge",
            upn: "svc-bridge@example.com",
            password: "correct horse",
        }]
    }

    fn handshake(s: &NtlmServer, c1: u64, c2: u64, user: &str, dom: &str, pw: &str) -> Step {
        let Step::Challenge(ch) = s.step(
            ConnId(c1),
            Some(&negotiate()),
            &accounts(),
            "EXAMPLE",
            "example.com",
        ) else {
            panic!("no challenge")
        };
        let auth = authenticate(&ch, user, dom, pw);
        s.step(
            ConnId(c2),
            Some(&auth),
            &accounts(),
            "EXAMPLE",
            "example.com",
        )
    }

    #[test]
    fn the_challenge_carries_a_timestamp() {
        let s = NtlmServer::default();
        let Step::Challenge(ch) = s.step(
            ConnId(1),
            Some(&negotiate()),
            &accounts(),
            "EXAMPLE",
            "example.com",
        ) else {
            panic!("no challenge")
        };
        let c = B64.decode(ch.strip_prefix("NTLM ").unwrap()).unwrap();
        assert_eq!(&c[..8], SIGNATURE);
        assert_eq!(le32(&c, 8), Some(2));
        assert_ne!(le32(&c, 20).unwrap() & TARGET_INFO, 0);
        let mut info = field(&c, 40).unwrap();
        let mut ids = Vec::new();
        while let (Some(id), Some(len)) = (le16(info, 0), le16(info, 2)) {
            ids.push(id);
            info = &info[4 + usize::from(len)..];
        }
        assert_eq!(ids, [2, 1, 4, 3, 7, 0]);
    }

    #[test]
    fn right_and_wrong_passwords() {
        let s = NtlmServer::default();
        assert_eq!(
            handshake(&s, 1, 1, "svc-bridge", "EXAMPLE", "correct horse"),
            Step::Authenticated(0)
        );
        // The connection stays the user's without a header.
        assert_eq!(
            s.step(ConnId(1), None, &accounts(), "EXAMPLE", "example.com"),
            Step::Authenticated(0)
        );
        assert_eq!(
            s.step(ConnId(2), None, &accounts(), "EXAMPLE", "example.com"),
            Step::None
        );
        assert_eq!(
            handshake(&s, 3, 3, "svc-bridge@example.com", "", "correct horse"),
            Step::Authenticated(0)
        );
        assert_eq!(
            handshake(&s, 4, 4, "svc-bridge", "EXAMPLE", "wrong"),
            Step::Challenge("NTLM".into())
        );
        assert_eq!(
            handshake(&s, 5, 5, "nobody", "EXAMPLE", "correct horse"),
            Step::Challenge("NTLM".into())
        );
    }

    #[test]
    fn authenticate_on_another_connection_is_refused() {
        let s = NtlmServer::default();
        assert_eq!(
            handshake(&s, 1, 2, "svc-bridge", "EXAMPLE", "correct horse"),
            Step::Challenge("NTLM".into())
        );
    }

    #[test]
    fn ntowf_v2_matches_the_specification_example() {
        // MS-NLMP 4.2.4.1.1: User "User", UserDom "Domain", Passwd
        // "Password" give ResponseKeyNT 0c868a403bfd7a93a3001ef22ef02e3f.
        assert_eq!(
            hex::encode(ntowf_v2("Password", "User", "Domain")),
            "0c868a403bfd7a93a3001ef22ef02e3f"
        );
    }
}
