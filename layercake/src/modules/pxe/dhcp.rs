//! The DHCPv4 server core (sans-io): one datagram in, at most one reply out.
//!
//! - [`DhcpCore::handle`]: a datagram from `source` at `now` ->
//!   [`Handled`]: what happened ([`DhcpResult`], one counter each) and
//!   the reply to send, if any, with its destination ([`DhcpReply`]).
//! - [`DhcpCore::poll_event`]: [`DhcpEvent::Acked`] when a registered MAC
//!   was given its ACK (the pxe module's WAIT -> INIT signal). Poll it
//!   until `None` after every `handle`.
//! - [`DhcpConfig`]: the server's address, lease time, boot files per
//!   architecture and the iPXE script URL.
//!
//! The core answers only MACs in the [`Registry`] passed to `handle`, and
//! only with the address registered for them: there is no pool and no
//! lease database, so a restarted server answers exactly as before.
//! DISCOVER -> OFFER; REQUEST -> ACK, or NAK when the client asks for an
//! address other than its registered one; RELEASE and DECLINE are counted.
//! A firmware PXE client (option 60 `PXEClient...`) is sent to TFTP
//! (`siaddr` = next-server and option 67 = the boot file for its option 93
//! architecture); an iPXE client (option 77 user class `iPXE`) is sent to
//! its HTTP script; any other client (layer 0's own `udhcpc`) just gets
//! its address.
//!
//! Hostile input: every datagram is screened before the codec sees it
//! (size within [`DATAGRAM_BYTES_MAX`], the fixed BOOTP header, the magic
//! cookie, every option inside the datagram, at most [`OPTIONS_MAX`]
//! options, and the fixed lengths of the options the `dhcproto` decoder
//! reads without checking); whatever fails is a counted drop, never a
//! panic and never a reply.
//!
//! Replies go where RFC 2131 section 4.1 says: to the relay (`giaddr`,
//! port 67) if there is one, to `ciaddr` when the client has an address
//! (renewing), else broadcast (a NAK always is). Unicast to a client
//! without an address would need ARP injection, which a UDP socket cannot
//! do; every client must accept a broadcast answer.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, DhcpOptions, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::Time;
use super::registry::{Arch, Mac, NodeBoot, Registry};

/// Largest datagram accepted (an Ethernet MTU); larger ones are dropped
/// unread. The shell's receive buffer is one byte larger, to see them.
pub const DATAGRAM_BYTES_MAX: usize = 1500;

/// The fixed BOOTP header before the magic cookie (RFC 2131 figure 1).
pub const BOOTP_HEADER_BYTES: usize = 236;

/// The DHCP magic cookie (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Most options (pads not counted) one datagram may carry.
pub const OPTIONS_MAX: usize = 128;

/// Largest reply this server builds: the size every DHCP client must
/// accept (RFC 2131 section 2), so no client needs option 57 from us.
pub const REPLY_BYTES_MAX: usize = 576;

/// Longest boot file name or script URL (one option 67 without RFC 3396
/// splitting).
pub const BOOT_FILE_BYTES_MAX: usize = 255;

/// Most undelivered events; the oldest is dropped (and counted) beyond.
pub const EVENTS_MAX: usize = 1024;

/// Longest field copied into the BOOTP `file` header field (128 bytes
/// with its terminating NUL); longer names travel in option 67 only.
const FILE_FIELD_BYTES_MAX: usize = 127;

/// The DHCP server port; relays are answered on it.
pub const SERVER_PORT: u16 = 67;

/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// What the core did with one datagram: one counter per value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhcpResult {
    /// DISCOVER from a registered MAC: OFFER sent.
    Offer,
    /// REQUEST for the registered address: ACK sent.
    Ack,
    /// REQUEST for another address: NAK sent.
    Nak,
    /// RELEASE from a registered MAC (nothing to free: addresses are fixed).
    Release,
    /// DECLINE from a registered MAC: the client saw its address in use.
    Decline,
    /// The MAC is not in the registry: no answer.
    IgnoredUnknownMac,
    /// A REQUEST that names another server: the client chose it.
    IgnoredOtherServer,
    /// A BOOTREPLY, or a server message type inside a BOOTREQUEST.
    IgnoredNotRequest,
    /// A registered firmware PXE client whose architecture has no boot file.
    IgnoredUnknownArch,
    /// A message type this server does not serve (INFORM, lease queries).
    IgnoredUnsupported,
    /// Hardware other than Ethernet (htype 1, hlen 6).
    IgnoredNotEthernet,
    /// Larger than [`DATAGRAM_BYTES_MAX`].
    IgnoredOversized,
    /// Shorter than the BOOTP header and magic cookie.
    IgnoredTruncated,
    /// Bad magic cookie, options overrunning the datagram, too many
    /// options, an option of impossible length, no message type, or a
    /// codec error.
    IgnoredMalformed,
    /// The reply could not be encoded within [`REPLY_BYTES_MAX`] (a
    /// configuration problem: a boot file name too long).
    ReplyTooLarge,
}

impl DhcpResult {
    /// Every value, in a fixed order (the counters' index).
    pub const ALL: [DhcpResult; 15] = [
        DhcpResult::Offer,
        DhcpResult::Ack,
        DhcpResult::Nak,
        DhcpResult::Release,
        DhcpResult::Decline,
        DhcpResult::IgnoredUnknownMac,
        DhcpResult::IgnoredOtherServer,
        DhcpResult::IgnoredNotRequest,
        DhcpResult::IgnoredUnknownArch,
        DhcpResult::IgnoredUnsupported,
        DhcpResult::IgnoredNotEthernet,
        DhcpResult::IgnoredOversized,
        DhcpResult::IgnoredTruncated,
        DhcpResult::IgnoredMalformed,
        DhcpResult::ReplyTooLarge,
    ];

    /// The metric label (`layercake_pxe_dhcp_total{result=...}`).
    pub fn label(self) -> &'static str {
        match self {
            DhcpResult::Offer => "offer",
            DhcpResult::Ack => "ack",
            DhcpResult::Nak => "nak",
            DhcpResult::Release => "release",
            DhcpResult::Decline => "decline",
            DhcpResult::IgnoredUnknownMac => "ignored_unknown_mac",
            DhcpResult::IgnoredOtherServer => "ignored_other_server",
            DhcpResult::IgnoredNotRequest => "ignored_not_request",
            DhcpResult::IgnoredUnknownArch => "ignored_unknown_arch",
            DhcpResult::IgnoredUnsupported => "ignored_unsupported",
            DhcpResult::IgnoredNotEthernet => "ignored_not_ethernet",
            DhcpResult::IgnoredOversized => "ignored_oversized",
            DhcpResult::IgnoredTruncated => "ignored_truncated",
            DhcpResult::IgnoredMalformed => "ignored_malformed",
            DhcpResult::ReplyTooLarge => "reply_too_large",
        }
    }

    /// Whether the datagram was dropped without an answer for a reason
    /// other than the protocol's own (RELEASE and DECLINE need none).
    pub fn is_drop(self) -> bool {
        !matches!(
            self,
            DhcpResult::Offer
                | DhcpResult::Ack
                | DhcpResult::Nak
                | DhcpResult::Release
                | DhcpResult::Decline
        )
    }

    /// The position in [`DhcpResult::ALL`] (declaration order).
    fn index(self) -> usize {
        self as usize
    }
}

/// Per-[`DhcpResult`] counts since the core was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhcpCounters {
    counts: [u64; DhcpResult::ALL.len()],
    /// Events dropped because [`EVENTS_MAX`] were undelivered.
    pub events_dropped: u64,
}

impl DhcpCounters {
    /// The count of one result.
    pub fn get(&self, result: DhcpResult) -> u64 {
        self.counts[result.index()]
    }

    /// Every result with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DhcpResult, u64)> + '_ {
        DhcpResult::ALL.iter().map(|&r| (r, self.get(r)))
    }

    fn bump(&mut self, result: DhcpResult) {
        let c = &mut self.counts[result.index()];
        *c = c.saturating_add(1);
    }
}

/// What kind of client asked, from its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// Firmware PXE (option 60 starts with `PXEClient`), not iPXE: gets a
    /// boot file over TFTP.
    Firmware,
    /// iPXE (option 77 says `iPXE`): gets its HTTP script URL.
    Ipxe,
    /// Anything else (an OS's DHCP client): gets an address only.
    Plain,
}

impl ClientKind {
    /// A short name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Firmware => "firmware",
            ClientKind::Ipxe => "ipxe",
            ClientKind::Plain => "plain",
        }
    }
}

/// Which key the iPXE script URL names a node by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptKey {
    /// `.../boot/52:54:00:12:34:56.ipxe`
    Mac,
    /// `.../boot/vm1.ipxe`
    Name,
}

/// The boot file a firmware PXE client of each architecture is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    /// BIOS x86 (Debian's `ipxe` package: `undionly.kpxe`).
    pub bios_x86: String,
    /// UEFI x86-64 (`ipxe.efi`).
    pub efi_x64: String,
    /// UEFI arm64 (`None`: such clients are not booted).
    pub efi_arm64: Option<String>,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles {
            bios_x86: "undionly.kpxe".into(),
            efi_x64: "ipxe.efi".into(),
            efi_arm64: None,
        }
    }
}

impl BootFiles {
    /// The file for `arch`, if there is one.
    pub fn for_arch(&self, arch: Arch) -> Option<&str> {
        match arch {
            Arch::BiosX86 => Some(&self.bios_x86),
            Arch::EfiX64 => Some(&self.efi_x64),
            Arch::EfiArm64 => self.efi_arm64.as_deref(),
        }
    }
}

/// The server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// This server's address on the boot network: the server identifier
    /// (option 54) and the TFTP next-server (`siaddr`).
    pub server_ip: Ipv4Addr,
    /// Lease time handed out (option 51). Addresses are fixed per MAC, so
    /// this only sets how often clients renew.
    pub lease_secs: u32,
    /// Boot files for firmware PXE clients, per architecture.
    pub boot_files: BootFiles,
    /// The HTTP base iPXE clients are sent to, without a trailing slash
    /// (`http://10.0.0.1:8080`); the script is `{base}/boot/{key}.ipxe`.
    pub script_base_url: String,
    /// Whether the script URL names nodes by MAC or by name.
    pub script_key: ScriptKey,
}

impl DhcpConfig {
    /// Defaults for a server at `server_ip` whose HTTP boot listens on
    /// `http_port`: one-hour leases, Debian's iPXE file names, scripts by MAC.
    pub fn new(server_ip: Ipv4Addr, http_port: u16) -> Self {
        DhcpConfig {
            server_ip,
            lease_secs: 3600,
            boot_files: BootFiles::default(),
            script_base_url: format!("http://{server_ip}:{http_port}"),
            script_key: ScriptKey::Mac,
        }
    }

    /// The script URL for one node.
    pub fn script_url(&self, mac: Mac, node: &NodeBoot) -> String {
        match self.script_key {
            ScriptKey::Mac => format!("{}/boot/{mac}.ipxe", self.script_base_url),
            ScriptKey::Name => format!("{}/boot/{}.ipxe", self.script_base_url, node.name),
        }
    }
}

/// A reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpReply {
    /// The encoded datagram (at most [`REPLY_BYTES_MAX`] bytes).
    pub bytes: Vec<u8>,
    /// Where to send it (a broadcast needs `SO_BROADCAST`).
    pub to: SocketAddrV4,
}

/// The outcome of [`DhcpCore::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Handled {
    /// What happened (already counted by the core).
    pub result: DhcpResult,
    /// The reply to send, if any.
    pub reply: Option<DhcpReply>,
}

/// Something the module should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhcpEvent {
    /// A registered MAC was sent an ACK for its address.
    Acked {
        /// The client.
        mac: Mac,
        /// Its registered name.
        name: String,
        /// The address acknowledged.
        ip: Ipv4Addr,
        /// Which client asked (firmware, iPXE, layer 0's own).
        client: ClientKind,
        /// When.
        at: Time,
    },
}

/// The DHCPv4 server core. See the module documentation.
#[derive(Debug)]
pub struct DhcpCore {
    config: DhcpConfig,
    counters: DhcpCounters,
    events: VecDeque<DhcpEvent>,
}

impl DhcpCore {
    /// A core with `config`.
    pub fn new(config: DhcpConfig) -> Self {
        DhcpCore {
            config,
            counters: DhcpCounters::default(),
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Counts by result since the core was made.
    pub fn counters(&self) -> &DhcpCounters {
        &self.counters
    }

    /// Handles one datagram received from `source`, answering only MACs in
    /// `nodes`. Never panics on any input.
    pub fn handle(
        &mut self,
        now: Time,
        datagram: &[u8],
        source: SocketAddrV4,
        nodes: &Registry,
    ) -> Handled {
        let (result, reply) = match self.answer(now, datagram, nodes) {
            Ok((result, reply)) => (result, reply),
            Err(result) => (result, None),
        };
        self.counters.bump(result);
        if result.is_drop() {
            tracing::debug!(%source, result = result.label(), "dhcp: dropped");
        }
        Handled { result, reply }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DhcpEvent> {
        self.events.pop_front()
    }

    fn answer(
        &mut self,
        now: Time,
        datagram: &[u8],
        nodes: &Registry,
    ) -> Result<(DhcpResult, Option<DhcpReply>), DhcpResult> {
        screen(datagram)?;
        let request = Message::decode(&mut Decoder::new(datagram))
            .map_err(|_| DhcpResult::IgnoredMalformed)?;
        let kind = request
            .opts()
            .msg_type()
            .ok_or(DhcpResult::IgnoredMalformed)?;
        let mac = client_mac(&request).ok_or(DhcpResult::IgnoredNotEthernet)?;
        if matches!(
            kind,
            MessageType::Offer | MessageType::Ack | MessageType::Nak
        ) {
            return Err(DhcpResult::IgnoredNotRequest);
        }
        let node = nodes.get(&mac).ok_or(DhcpResult::IgnoredUnknownMac)?;
        match kind {
            MessageType::Discover => {
                let reply = self.reply(&request, mac, node, MessageType::Offer)?;
                Ok((DhcpResult::Offer, Some(reply)))
            }
            MessageType::Request => self.on_request(now, &request, mac, node),
            MessageType::Release => Ok((DhcpResult::Release, None)),
            MessageType::Decline => {
                tracing::warn!(%mac, ip = %node.ip, "dhcp: client declined its address (in use?)");
                Ok((DhcpResult::Decline, None))
            }
            _ => Err(DhcpResult::IgnoredUnsupported),
        }
    }

    /// RFC 2131 section 4.3.2: SELECTING (server id present), INIT-REBOOT
    /// (requested address, no ciaddr) or RENEWING/REBINDING (ciaddr).
    fn on_request(
        &mut self,
        now: Time,
        request: &Message,
        mac: Mac,
        node: &NodeBoot,
    ) -> Result<(DhcpResult, Option<DhcpReply>), DhcpResult> {
        let opts = request.opts();
        if let Some(DhcpOption::ServerIdentifier(id)) = opts.get(OptionCode::ServerIdentifier)
            && *id != self.config.server_ip
        {
            return Err(DhcpResult::IgnoredOtherServer);
        }
        let asked = match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
            _ => request.ciaddr(),
        };
        if asked != node.ip {
            tracing::info!(%mac, %asked, registered = %node.ip, "dhcp: NAK");
            let reply = self.reply(request, mac, node, MessageType::Nak)?;
            return Ok((DhcpResult::Nak, Some(reply)));
        }
        let reply = self.reply(request, mac, node, MessageType::Ack)?;
        self.push_event(DhcpEvent::Acked {
            mac,
            name: node.name.clone(),
            ip: node.ip,
            client: client_kind(request),
            at: now,
        });
        Ok((DhcpResult::Ack, Some(reply)))
    }

    fn push_event(&mut self, event: DhcpEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
        self.events.push_back(event);
    }

    /// Builds an OFFER, ACK or NAK for `request` (a copy of it with the
    /// reply's fields, so the transaction id, flags, relay address and
    /// client address carry over).
    fn reply(
        &self,
        request: &Message,
        mac: Mac,
        node: &NodeBoot,
        kind: MessageType,
    ) -> Result<DhcpReply, DhcpResult> {
        let mut m = request.clone();
        m.set_opcode(Opcode::BootReply).set_hops(0).set_secs(0);
        m.set_siaddr(Ipv4Addr::UNSPECIFIED);
        m.clear_sname();
        m.clear_fname();
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.config.server_ip));
        if kind == MessageType::Nak {
            m.set_yiaddr(Ipv4Addr::UNSPECIFIED)
                .set_ciaddr(Ipv4Addr::UNSPECIFIED);
        } else {
            if kind == MessageType::Offer {
                m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
            }
            m.set_yiaddr(node.ip);
            self.lease_options(&mut opts, node);
            self.boot_options(request, &mut m, &mut opts, mac, node)?;
        }
        m.set_opts(opts);
        let mut bytes = Vec::with_capacity(REPLY_BYTES_MAX);
        m.encode(&mut Encoder::new(&mut bytes))
            .map_err(|_| DhcpResult::ReplyTooLarge)?;
        if bytes.len() > REPLY_BYTES_MAX {
            return Err(DhcpResult::ReplyTooLarge);
        }
        Ok(DhcpReply {
            bytes,
            to: destination(request, kind),
        })
    }

    fn lease_options(&self, opts: &mut DhcpOptions, node: &NodeBoot) {
        let lease = self.config.lease_secs;
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        opts.insert(DhcpOption::Renewal(lease / 2));
        opts.insert(DhcpOption::Rebinding(
            lease.checked_mul(7).map_or(lease, |l| l / 8),
        ));
        opts.insert(DhcpOption::SubnetMask(node.netmask()));
        if let Some(gw) = node.gateway {
            opts.insert(DhcpOption::Router(vec![gw]));
        }
        opts.insert(DhcpOption::Hostname(node.name.clone()));
    }

    /// Firmware: next-server and boot file; iPXE: the script URL.
    fn boot_options(
        &self,
        request: &Message,
        m: &mut Message,
        opts: &mut DhcpOptions,
        mac: Mac,
        node: &NodeBoot,
    ) -> Result<(), DhcpResult> {
        let file = match client_kind(request) {
            ClientKind::Plain => return Ok(()),
            ClientKind::Ipxe => self.config.script_url(mac, node),
            ClientKind::Firmware => {
                let arch = node
                    .arch
                    .or_else(|| client_arch(request))
                    .ok_or(DhcpResult::IgnoredUnknownArch)?;
                let file = self
                    .config
                    .boot_files
                    .for_arch(arch)
                    .ok_or(DhcpResult::IgnoredUnknownArch)?;
                opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
                file.to_owned()
            }
        };
        if file.len() > BOOT_FILE_BYTES_MAX {
            return Err(DhcpResult::ReplyTooLarge);
        }
        m.set_siaddr(self.config.server_ip);
        if file.len() <= FILE_FIELD_BYTES_MAX {
            m.set_fname(file.as_bytes());
        }
        opts.insert(DhcpOption::BootfileName(file.into_bytes()));
        Ok(())
    }
}

/// The client's Ethernet address, if it says it has one.
fn client_mac(m: &Message) -> Option<Mac> {
    if u8::from(m.htype()) != 1 || m.hlen() != 6 {
        return None;
    }
    let bytes: [u8; 6] = m.chaddr().get(..6)?.try_into().ok()?;
    Some(Mac(bytes))
}

/// Whether the request came from iPXE, PXE firmware or something else.
pub fn client_kind(m: &Message) -> ClientKind {
    let opts = m.opts();
    if let Some(DhcpOption::UserClass(class)) = opts.get(OptionCode::UserClass) {
        // iPXE sends the bare string; RFC 3004 clients a length-prefixed list.
        let is_ipxe = class.as_slice() == b"iPXE" || class.windows(5).any(|w| w == b"\x04iPXE");
        if is_ipxe {
            return ClientKind::Ipxe;
        }
    }
    match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(id)) if id.starts_with(b"PXEClient") => {
            ClientKind::Firmware
        }
        _ => ClientKind::Plain,
    }
}

/// The client's architecture from option 93 (BIOS x86 when absent, as the
/// PXE specification's clients before RFC 4578 were).
fn client_arch(m: &Message) -> Option<Arch> {
    match m.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Arch::from_option93(u16::from(*a)),
        _ => Some(Arch::BiosX86),
    }
}

/// RFC 2131 section 4.1: relay, else the client's own address, else
/// broadcast.
fn destination(request: &Message, kind: MessageType) -> SocketAddrV4 {
    if !request.giaddr().is_unspecified() {
        return SocketAddrV4::new(request.giaddr(), SERVER_PORT);
    }
    if kind != MessageType::Nak && !request.ciaddr().is_unspecified() {
        return SocketAddrV4::new(request.ciaddr(), CLIENT_PORT);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
}

/// Checks what the codec would trust: sizes, the header, the cookie and
/// the option layout. `Ok` means the codec may read the datagram.
pub fn screen(datagram: &[u8]) -> Result<(), DhcpResult> {
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(DhcpResult::IgnoredOversized);
    }
    let options_at = BOOTP_HEADER_BYTES + MAGIC_COOKIE.len();
    if datagram.len() < options_at {
        return Err(DhcpResult::IgnoredTruncated);
    }
    match datagram[0] {
        1 => {}
        2 => return Err(DhcpResult::IgnoredNotRequest),
        _ => return Err(DhcpResult::IgnoredMalformed),
    }
    if datagram[1] != 1 || datagram[2] != 6 {
        return Err(DhcpResult::IgnoredNotEthernet);
    }
    if datagram[BOOTP_HEADER_BYTES..options_at] != MAGIC_COOKIE {
        return Err(DhcpResult::IgnoredMalformed);
    }
    screen_options(&datagram[options_at..])
}

/// Walks the options (code, length, value), joining consecutive options
/// of one code as RFC 3396 (and the codec) does, and checks each joined
/// value's length.
fn screen_options(options: &[u8]) -> Result<(), DhcpResult> {
    let mut at = 0usize;
    let mut count = 0usize;
    // The option being joined: (code, total value length).
    let mut run: Option<(u8, usize)> = None;
    while let Some(&code) = options.get(at) {
        if code == 0 || code == 255 {
            if let Some((c, len)) = run.take() {
                check_length(c, len)?;
            }
            if code == 255 {
                return Ok(());
            }
            at = at.checked_add(1).ok_or(DhcpResult::IgnoredMalformed)?;
            continue;
        }
        let len = usize::from(*options.get(at + 1).ok_or(DhcpResult::IgnoredMalformed)?);
        let end = at
            .checked_add(2)
            .and_then(|v| v.checked_add(len))
            .filter(|&end| end <= options.len())
            .ok_or(DhcpResult::IgnoredMalformed)?;
        count = count.checked_add(1).ok_or(DhcpResult::IgnoredMalformed)?;
        if count > OPTIONS_MAX {
            return Err(DhcpResult::IgnoredMalformed);
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total.saturating_add(len))),
            Some((c, total)) => {
                check_length(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        at = end;
    }
    match run {
        Some((c, len)) => check_length(c, len),
        None => Ok(()),
    }
}

/// Value lengths the codec assumes without checking (it asserts them in
/// debug builds or subtracts from them): Rapid Commit (80) is empty,
/// Client FQDN (81) has 3 fixed bytes, Client Network Interface (94) is 3
/// bytes, the bulk lease query status (151) has a code byte and its times
/// (152-155) are 4 bytes. The ones this server reads (53, 93) must fit
/// their type.
fn check_length(code: u8, len: usize) -> Result<(), DhcpResult> {
    let ok = match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        53 => len == 1,
        93 => len >= 2 && len.is_multiple_of(2),
        50 | 54 => len == 4,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DhcpResult::IgnoredMalformed)
    }
}

#[cfg(test)]
mod tests;
