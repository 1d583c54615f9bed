//! RMCP+ cryptography: cipher suites, the RAKP HMACs, session key
//! derivation (SIK, K1, K2), the integrity AuthCode and AES-CBC-128
//! confidentiality with IPMI's own padding.
//!
//! - [`CipherSuite`]: a suite ID resolved into its three algorithms.
//! - [`AuthAlg`]: RAKP-HMAC-SHA1 / RAKP-HMAC-SHA256 (key exchange codes).
//! - [`SessionKeys`]: K1 and K2 of an established session, with the
//!   integrity and confidentiality operations that use them.
//!
//! Pure functions of their inputs: the caller supplies keys, random numbers
//! and IVs.

use aes::Aes128;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::error::IpmiError;

/// AES block (and IV) size.
pub const AES_BLOCK_BYTES: usize = 16;

/// The RAKP authentication algorithm (IPMI v2.0 table 13-17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthAlg {
    /// RAKP-HMAC-SHA1 (algorithm 1).
    HmacSha1,
    /// RAKP-HMAC-SHA256 (algorithm 3).
    HmacSha256,
}

/// The integrity algorithm (IPMI v2.0 table 13-18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrityAlg {
    /// No AuthCode trailer.
    None,
    /// HMAC-SHA1 keyed with K1, truncated to 12 bytes (algorithm 1).
    HmacSha1_96,
    /// HMAC-SHA256 keyed with K1, truncated to 16 bytes (algorithm 4).
    HmacSha256_128,
}

/// The confidentiality algorithm (IPMI v2.0 table 13-19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfAlg {
    /// Payloads in clear.
    None,
    /// AES-CBC with the first 16 bytes of K2 (algorithm 1).
    AesCbc128,
}

/// A cipher suite ID resolved into its algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherSuite {
    /// The suite ID (IPMI v2.0 table 22-20).
    pub id: u8,
    /// Key exchange authentication.
    pub auth: AuthAlg,
    /// Per-packet integrity.
    pub integrity: IntegrityAlg,
    /// Per-packet confidentiality.
    pub conf: ConfAlg,
}

impl CipherSuite {
    /// Resolves a suite ID. Suites without RAKP authentication (0) and
    /// those with MD5 or RC4 are refused as unsupported.
    pub fn from_id(id: u8) -> Result<CipherSuite, IpmiError> {
        use AuthAlg::*;
        let (auth, integrity, conf) = match id {
            1 => (HmacSha1, IntegrityAlg::None, ConfAlg::None),
            2 => (HmacSha1, IntegrityAlg::HmacSha1_96, ConfAlg::None),
            3 => (HmacSha1, IntegrityAlg::HmacSha1_96, ConfAlg::AesCbc128),
            15 => (HmacSha256, IntegrityAlg::None, ConfAlg::None),
            16 => (HmacSha256, IntegrityAlg::HmacSha256_128, ConfAlg::None),
            17 => (HmacSha256, IntegrityAlg::HmacSha256_128, ConfAlg::AesCbc128),
            _ => {
                return Err(IpmiError::Unsupported(format!(
                    "cipher suite {id} (supported: 1, 2, 3, 15, 16, 17)"
                )));
            }
        };
        Ok(CipherSuite {
            id,
            auth,
            integrity,
            conf,
        })
    }
}

impl AuthAlg {
    /// The wire value in the Open Session authentication payload.
    pub fn code(self) -> u8 {
        match self {
            AuthAlg::HmacSha1 => 1,
            AuthAlg::HmacSha256 => 3,
        }
    }

    /// The length of a full HMAC (RAKP 2 and 3 codes, SIK, K1, K2).
    pub fn digest_len(self) -> usize {
        match self {
            AuthAlg::HmacSha1 => 20,
            AuthAlg::HmacSha256 => 32,
        }
    }

    /// The length of RAKP 4's integrity check value (HMAC-SHA1-96 or
    /// HMAC-SHA256-128 of the SIK).
    pub fn rakp4_icv_len(self) -> usize {
        match self {
            AuthAlg::HmacSha1 => 12,
            AuthAlg::HmacSha256 => 16,
        }
    }

    /// HMAC of the concatenation of `parts` under `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            AuthAlg::HmacSha1 => hmac_parts::<Hmac<Sha1>>(key, parts),
            AuthAlg::HmacSha256 => hmac_parts::<Hmac<Sha256>>(key, parts),
        }
    }

    /// Constant-time check that `tag` is the HMAC of `parts` under `key`,
    /// or its leading `tag.len()` bytes (a truncated HMAC). An empty tag
    /// never verifies.
    pub fn verify(self, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        if tag.is_empty() || tag.len() > self.digest_len() {
            return false;
        }
        match self {
            AuthAlg::HmacSha1 => verify_parts::<Hmac<Sha1>>(key, parts, tag),
            AuthAlg::HmacSha256 => verify_parts::<Hmac<Sha256>>(key, parts, tag),
        }
    }
}

impl IntegrityAlg {
    /// The wire value in the Open Session integrity payload.
    pub fn code(self) -> u8 {
        match self {
            IntegrityAlg::None => 0,
            IntegrityAlg::HmacSha1_96 => 1,
            IntegrityAlg::HmacSha256_128 => 4,
        }
    }

    /// The AuthCode length at the end of an authenticated packet.
    pub fn auth_code_len(self) -> usize {
        match self {
            IntegrityAlg::None => 0,
            IntegrityAlg::HmacSha1_96 => 12,
            IntegrityAlg::HmacSha256_128 => 16,
        }
    }
}

impl ConfAlg {
    /// The wire value in the Open Session confidentiality payload.
    pub fn code(self) -> u8 {
        match self {
            ConfAlg::None => 0,
            ConfAlg::AesCbc128 => 1,
        }
    }
}

fn hmac_parts<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn verify_parts<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.verify_truncated_left(tag).is_ok()
}

/// The RAKP user key `Kuid`: the password, zero-padded to 20 bytes (HMAC
/// would pad it the same way; the padding keeps the spec's definition).
pub fn kuid(password: &[u8]) -> Vec<u8> {
    let mut k = password.to_vec();
    if k.len() < 20 {
        k.resize(20, 0);
    }
    k
}

/// The session integrity key SIK = HMAC_Kg(Rm | Rc | RoleM | ULengthM |
/// UNameM), with Kg = Kuid (no BMC key configured).
pub fn derive_sik(
    auth: AuthAlg,
    kg: &[u8],
    rm: &[u8; 16],
    rc: &[u8; 16],
    role: u8,
    user: &[u8],
) -> Vec<u8> {
    let ulen = [user.len() as u8];
    auth.hmac(kg, &[rm, rc, &[role], &ulen, user])
}

/// The keys of an established session and the per-packet operations that
/// use them.
#[derive(Clone)]
pub struct SessionKeys {
    /// The negotiated integrity algorithm.
    pub integrity: IntegrityAlg,
    /// The negotiated confidentiality algorithm.
    pub conf: ConfAlg,
    k1: Vec<u8>,
    k2: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SessionKeys")
            .field("integrity", &self.integrity)
            .field("conf", &self.conf)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 = HMAC_SIK(0x01 x 20) and K2 = HMAC_SIK(0x02 x 20), both with
    /// the suite's authentication HMAC (the 20-byte constants are used for
    /// SHA-256 too, as ipmitool and BMCs do).
    pub fn derive(suite: &CipherSuite, sik: &[u8]) -> SessionKeys {
        let k1 = suite.auth.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.auth.hmac(sik, &[&[0x02; 20]]);
        SessionKeys {
            integrity: suite.integrity,
            conf: suite.conf,
            k1,
            k2,
        }
    }

    /// K1, the integrity key.
    #[cfg(test)]
    pub fn k1(&self) -> &[u8] {
        &self.k1
    }

    /// K2, whose first 16 bytes are the AES key.
    #[cfg(test)]
    pub fn k2(&self) -> &[u8] {
        &self.k2
    }

    /// The AuthCode of `data` (from the session header's auth type byte
    /// through the next-header byte); empty without integrity.
    pub fn auth_code(&self, data: &[u8]) -> Vec<u8> {
        let n = self.integrity.auth_code_len();
        if n == 0 {
            return Vec::new();
        }
        let mut full = self.integrity_hmac().hmac(&self.k1, &[data]);
        full.truncate(n);
        full
    }

    /// Constant-time check of a received AuthCode.
    pub fn verify_auth_code(&self, data: &[u8], code: &[u8]) -> bool {
        let n = self.integrity.auth_code_len();
        n != 0 && code.len() == n && self.integrity_hmac().verify(&self.k1, &[data], code)
    }

    fn integrity_hmac(&self) -> AuthAlg {
        match self.integrity {
            IntegrityAlg::HmacSha256_128 => AuthAlg::HmacSha256,
            IntegrityAlg::HmacSha1_96 | IntegrityAlg::None => AuthAlg::HmacSha1,
        }
    }

    /// Encrypts a payload: `iv | AES-CBC(data | pad 1,2,.. | pad length)`.
    /// Returns the payload unchanged without confidentiality.
    pub fn encrypt(&self, data: &[u8], iv: &[u8; AES_BLOCK_BYTES]) -> Vec<u8> {
        if self.conf == ConfAlg::None {
            return data.to_vec();
        }
        let pad = (AES_BLOCK_BYTES - (data.len() + 1) % AES_BLOCK_BYTES) % AES_BLOCK_BYTES;
        let mut buf = Vec::with_capacity(data.len() + pad + 1);
        buf.extend_from_slice(data);
        buf.extend((1..=pad).map(|i| i as u8));
        buf.push(pad as u8);
        let len = buf.len();
        let enc = cbc::Encryptor::<Aes128>::new(self.aes_key().into(), iv.into());
        // `len` is a multiple of the block size, so NoPadding cannot fail.
        let ct = enc
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("whole blocks");
        let mut out = Vec::with_capacity(AES_BLOCK_BYTES + ct.len());
        out.extend_from_slice(iv);
        out.extend_from_slice(ct);
        out
    }

    /// Decrypts a payload produced by [`SessionKeys::encrypt`] (or a BMC),
    /// checking its length and padding.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, &'static str> {
        if self.conf == ConfAlg::None {
            return Ok(data.to_vec());
        }
        if data.len() < 2 * AES_BLOCK_BYTES || !data.len().is_multiple_of(AES_BLOCK_BYTES) {
            return Err("encrypted payload is not IV plus whole AES blocks");
        }
        let (iv, ct) = data.split_at(AES_BLOCK_BYTES);
        let mut buf = ct.to_vec();
        let dec = cbc::Decryptor::<Aes128>::new(self.aes_key().into(), iv.into());
        let pt = dec
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| "AES-CBC decryption failed")?;
        let (&pad_len, rest) = pt.split_last().ok_or("empty decrypted payload")?;
        let pad_len = pad_len as usize;
        if pad_len >= AES_BLOCK_BYTES || pad_len > rest.len() {
            return Err("bad confidentiality pad length");
        }
        let (plain, pad) = rest.split_at(rest.len() - pad_len);
        if pad.iter().enumerate().any(|(i, &b)| b as usize != i + 1) {
            return Err("bad confidentiality pad bytes");
        }
        Ok(plain.to_vec())
    }

    fn aes_key(&self) -> &[u8; 16] {
        // K2 is an HMAC output of 20 or 32 bytes, so it has 16 bytes.
        self.k2
            .first_chunk::<16>()
            .expect("K2 is at least 16 bytes")
    }
}
