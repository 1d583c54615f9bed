//! The RMCP+ session: the setup handshake as a pure state machine
//! ([`Handshake`]: Open Session, RAKP 1 to 4) and the state of an active
//! session ([`Session`]: IDs, keys, sequence numbers).
//!
//! The handshake never touches a socket, a clock or a random source: the
//! caller passes the console session ID, the random number Rm and every
//! received payload, and sends what comes back. Its steps, in order:
//!
//! 1. [`Handshake::open_session_request`] -> send as payload 0x10.
//! 2. [`Handshake::handle_open_session_response`] -> RAKP 1 to send.
//! 3. [`Handshake::handle_rakp2`] -> RAKP 3 to send (checks the BMC knows
//!    the password; on a mismatch send [`Handshake::rakp3_error`]).
//! 4. [`Handshake::handle_rakp4`] -> the established [`Session`].

use super::crypto::{CipherSuite, SessionKeys, derive_sik, kuid};
use super::error::{IpmiError, rakp_status_is_unsupported, rakp_status_name};
use super::rmcp::DecodeError;
use super::target::Privilege;

/// The longest IPMI user name.
pub const USER_NAME_BYTES_MAX: usize = 16;
/// The longest IPMI v2.0 password.
pub const PASSWORD_BYTES_MAX: usize = 20;
/// RAKP 1 role bit: look the user up by name only (not name and role).
const NAME_ONLY_LOOKUP: u8 = 0x10;
/// How far behind the highest inbound sequence number a packet may be.
pub const INBOUND_SEQ_WINDOW: u32 = 32;

/// The handshake's progress: every `handle_*` checks it is called in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    OpenSession,
    Rakp2,
    Rakp4,
}

/// The RMCP+ session setup for one BMC (see the module doc for the order
/// of calls). A failed `handle_*` leaves the handshake unusable: start a
/// new one with a fresh console session ID.
pub struct Handshake {
    suite: CipherSuite,
    console_sid: u32,
    rm: [u8; 16],
    role: u8,
    user: Vec<u8>,
    kuid: Vec<u8>,
    tag: u8,
    step: Step,
    bmc_sid: u32,
    rc: [u8; 16],
    guid: [u8; 16],
    sik: Vec<u8>,
}

/// What the handshake yields: an active session's identity and keys.
#[derive(Debug)]
pub struct Session {
    /// Our (remote console) session ID: BMC packets carry it.
    pub console_sid: u32,
    /// The BMC's (managed system) session ID: our packets carry it.
    pub bmc_sid: u32,
    /// K1 and K2 with the negotiated algorithms.
    pub keys: SessionKeys,
    out_seq: u32,
    rq_seq: u8,
    in_seq_max: Option<u32>,
    in_seq_seen: u64,
}

fn malformed(what: &str, e: DecodeError) -> IpmiError {
    IpmiError::Protocol(format!("malformed {what}: {e}"))
}

fn refused(step: &str, status: u8) -> IpmiError {
    let words = rakp_status_name(status);
    if rakp_status_is_unsupported(status) {
        IpmiError::Unsupported(format!("{step}: {words} (0x{status:02x})"))
    } else {
        IpmiError::AuthRefused(format!("{step}: {words} (0x{status:02x})"))
    }
}

fn arr16(b: &[u8], at: usize) -> Result<[u8; 16], DecodeError> {
    b.get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(DecodeError("truncated"))
}

impl Handshake {
    /// Starts a handshake. `console_sid` must be non-zero and unique among
    /// this client's sessions with the BMC; `rm` must be fresh random
    /// bytes. Fails for over-long names or passwords.
    pub fn new(
        suite: CipherSuite,
        privilege: Privilege,
        user: &str,
        password: &str,
        console_sid: u32,
        rm: [u8; 16],
    ) -> Result<Handshake, IpmiError> {
        assert_ne!(console_sid, 0, "session ID 0 means no session");
        if user.len() > USER_NAME_BYTES_MAX {
            return Err(IpmiError::Unsupported(format!(
                "user name of {} bytes (IPMI allows {USER_NAME_BYTES_MAX})",
                user.len()
            )));
        }
        if password.len() > PASSWORD_BYTES_MAX {
            return Err(IpmiError::Unsupported(format!(
                "password of {} bytes (IPMI v2.0 allows {PASSWORD_BYTES_MAX})",
                password.len()
            )));
        }
        Ok(Handshake {
            suite,
            console_sid,
            rm,
            role: NAME_ONLY_LOOKUP | privilege.code(),
            user: user.as_bytes().to_vec(),
            kuid: kuid(password.as_bytes()),
            tag: 0,
            step: Step::OpenSession,
            bmc_sid: 0,
            rc: [0; 16],
            guid: [0; 16],
            sik: Vec::new(),
        })
    }

    /// The Open Session Request payload (IPMI v2.0 section 13.17).
    pub fn open_session_request(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(32);
        p.push(self.tag);
        p.push(self.role & 0x0f);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.console_sid.to_le_bytes());
        for (kind, alg) in [
            (0u8, self.suite.auth.code()),
            (1, self.suite.integrity.code()),
            (2, self.suite.conf.code()),
        ] {
            p.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
        }
        p
    }

    /// Takes the Open Session Response; returns RAKP Message 1.
    pub fn handle_open_session_response(&mut self, p: &[u8]) -> Result<Vec<u8>, IpmiError> {
        self.expect(Step::OpenSession)?;
        let status = *p
            .get(1)
            .ok_or_else(|| malformed("open session response", DecodeError("empty")))?;
        if status != 0 {
            return Err(refused("open session", status));
        }
        self.check_console_sid(p, "open session response")?;
        if p.len() < 36 {
            return Err(malformed("open session response", DecodeError("truncated")));
        }
        let bmc_sid = u32_at(p, 8).map_err(|e| malformed("open session response", e))?;
        if bmc_sid == 0 {
            return Err(IpmiError::Protocol(
                "open session response: BMC session ID 0".into(),
            ));
        }
        let algs = [p[16], p[24], p[32]];
        let want = [
            self.suite.auth.code(),
            self.suite.integrity.code(),
            self.suite.conf.code(),
        ];
        if algs.map(|a| a & 0x3f) != want {
            return Err(IpmiError::Protocol(format!(
                "open session response: BMC chose algorithms {algs:?}, we proposed {want:?}"
            )));
        }
        self.bmc_sid = bmc_sid;
        self.step = Step::Rakp2;
        Ok(self.rakp1())
    }

    fn rakp1(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(28 + self.user.len());
        p.extend_from_slice(&[self.tag, 0, 0, 0]);
        p.extend_from_slice(&self.bmc_sid.to_le_bytes());
        p.extend_from_slice(&self.rm);
        p.push(self.role);
        p.extend_from_slice(&[0, 0]);
        p.push(self.user.len() as u8);
        p.extend_from_slice(&self.user);
        p
    }

    /// Takes RAKP Message 2; checks the BMC's key exchange authentication
    /// code (which proves it knows the password) and returns RAKP
    /// Message 3. A mismatch is `AuthRefused` ("invalid integrity check
    /// value"): usually a wrong password.
    pub fn handle_rakp2(&mut self, p: &[u8]) -> Result<Vec<u8>, IpmiError> {
        self.expect(Step::Rakp2)?;
        let status = *p
            .get(1)
            .ok_or_else(|| malformed("RAKP 2", DecodeError("empty")))?;
        if status != 0 {
            return Err(refused("RAKP 2", status));
        }
        self.check_console_sid(p, "RAKP 2")?;
        let n = self.suite.auth.digest_len();
        if p.len() != 40 + n {
            return Err(malformed(
                "RAKP 2",
                DecodeError("wrong length for the cipher suite"),
            ));
        }
        self.rc = arr16(p, 8).map_err(|e| malformed("RAKP 2", e))?;
        self.guid = arr16(p, 24).map_err(|e| malformed("RAKP 2", e))?;
        let code = &p[40..];
        let sidm = self.console_sid.to_le_bytes();
        let sidc = self.bmc_sid.to_le_bytes();
        let ulen = [self.user.len() as u8];
        let parts: [&[u8]; 8] = [
            &sidm,
            &sidc,
            &self.rm,
            &self.rc,
            &self.guid,
            &[self.role],
            &ulen,
            &self.user,
        ];
        if !self.suite.auth.verify(&self.kuid, &parts, code) {
            return Err(IpmiError::AuthRefused(
                "RAKP 2: invalid integrity check value (the BMC's key exchange code does not match: wrong password?)"
                    .into(),
            ));
        }
        self.sik = derive_sik(
            self.suite.auth,
            &self.kuid,
            &self.rm,
            &self.rc,
            self.role,
            &self.user,
        );
        self.step = Step::Rakp4;
        let code3 = self.suite.auth.hmac(
            &self.kuid,
            &[&self.rc, &sidm, &[self.role], &ulen, &self.user],
        );
        let mut m = Vec::with_capacity(8 + code3.len());
        m.extend_from_slice(&[self.tag, 0, 0, 0]);
        m.extend_from_slice(&sidc);
        m.extend_from_slice(&code3);
        Ok(m)
    }

    /// A RAKP Message 3 that reports `status` to the BMC and aborts the
    /// session (sent after a failed RAKP 2 check so the BMC frees it).
    pub fn rakp3_error(&self, status: u8) -> Vec<u8> {
        let mut m = vec![self.tag, status, 0, 0];
        m.extend_from_slice(&self.bmc_sid.to_le_bytes());
        m
    }

    /// Takes RAKP Message 4; checks its integrity check value and returns
    /// the active session.
    pub fn handle_rakp4(self, p: &[u8]) -> Result<Session, IpmiError> {
        self.expect(Step::Rakp4)?;
        let status = *p
            .get(1)
            .ok_or_else(|| malformed("RAKP 4", DecodeError("empty")))?;
        if status != 0 {
            return Err(refused("RAKP 4", status));
        }
        self.check_console_sid(p, "RAKP 4")?;
        let n = self.suite.auth.rakp4_icv_len();
        if p.len() != 8 + n {
            return Err(malformed(
                "RAKP 4",
                DecodeError("wrong length for the cipher suite"),
            ));
        }
        let sidc = self.bmc_sid.to_le_bytes();
        if !self
            .suite
            .auth
            .verify(&self.sik, &[&self.rm, &sidc, &self.guid], &p[8..])
        {
            return Err(IpmiError::AuthRefused(
                "RAKP 4: invalid integrity check value (session keys disagree)".into(),
            ));
        }
        Ok(Session::new(
            self.console_sid,
            self.bmc_sid,
            SessionKeys::derive(&self.suite, &self.sik),
        ))
    }

    /// The session integrity key (empty before RAKP 2).
    #[cfg(test)]
    pub fn sik(&self) -> &[u8] {
        &self.sik
    }

    fn expect(&self, step: Step) -> Result<(), IpmiError> {
        if self.step == step {
            Ok(())
        } else {
            Err(IpmiError::Protocol(format!(
                "handshake at {:?}, got a reply for {step:?}",
                self.step
            )))
        }
    }

    fn check_console_sid(&self, p: &[u8], what: &str) -> Result<(), IpmiError> {
        let sid = u32_at(p, 4).map_err(|e| malformed(what, e))?;
        if sid != self.console_sid {
            return Err(IpmiError::Protocol(format!(
                "{what}: for session 0x{sid:08x}, not ours"
            )));
        }
        Ok(())
    }
}

impl Session {
    /// A session just set up: outbound sequence numbers start at 1.
    pub fn new(console_sid: u32, bmc_sid: u32, keys: SessionKeys) -> Session {
        Session {
            console_sid,
            bmc_sid,
            keys,
            out_seq: 0,
            rq_seq: 0,
            in_seq_max: None,
            in_seq_seen: 0,
        }
    }

    /// The next outbound session sequence number (never 0, which marks
    /// sessionless packets).
    pub fn next_out_seq(&mut self) -> u32 {
        self.out_seq = self.out_seq.wrapping_add(1).max(1);
        self.out_seq
    }

    /// The next IPMI request sequence number (6 bits).
    pub fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.rq_seq
    }

    /// Accepts an inbound sequence number once: a number more than
    /// [`INBOUND_SEQ_WINDOW`] behind the highest seen, or already seen, is
    /// a replay.
    pub fn accept_in_seq(&mut self, seq: u32) -> bool {
        let Some(max) = self.in_seq_max else {
            self.in_seq_max = Some(seq);
            self.in_seq_seen = 1;
            return true;
        };
        if seq > max {
            let shift = seq - max;
            self.in_seq_seen = if shift >= 64 {
                0
            } else {
                self.in_seq_seen << shift
            };
            self.in_seq_seen |= 1;
            self.in_seq_max = Some(seq);
            return true;
        }
        let behind = max - seq;
        if behind >= INBOUND_SEQ_WINDOW {
            return false;
        }
        let bit = 1u64 << behind;
        let fresh = self.in_seq_seen & bit == 0;
        self.in_seq_seen |= bit;
        fresh
    }
}
