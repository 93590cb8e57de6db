//! What a request is counted against: the service as a whole, the peer's
//! address, or a header's value.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderName;

/// Header values longer than this are no key: they count against the
/// shared bucket of requests without one (a client cannot buy a bucket of
/// its own, nor make hashing costly, with an absurd value).
pub const MAX_KEY_LEN: usize = 256;

/// At most this many `X-Forwarded-For` entries are read from the right.
const MAX_FORWARDED_HOPS: usize = 16;

/// What each request is counted against.
///
/// ```
/// use tower_hardening_ratelimit::KeyMode;
///
/// assert_eq!("global".parse::<KeyMode>().unwrap(), KeyMode::Global);
/// assert_eq!("peer-ip".parse::<KeyMode>().unwrap(), KeyMode::PeerIp);
/// let by_key: KeyMode = "header:x-api-key".parse().unwrap();
/// assert_eq!(by_key.to_string(), "header:x-api-key");
/// assert!("header:".parse::<KeyMode>().is_err());
/// assert!("cookie".parse::<KeyMode>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyMode {
    /// One quota for the whole service.
    #[default]
    Global,
    /// One quota per client address (IPv6 addresses by their /64
    /// prefix: one host usually owns a whole /64). The address is the
    /// connection's peer, or `X-Forwarded-For`'s client when the peer is a
    /// declared trusted proxy.
    PeerIp,
    /// One quota per value of a request header (`x-api-key`). Requests
    /// without it, or with a value longer than [`MAX_KEY_LEN`], share one
    /// bucket.
    Header(HeaderName),
}

impl KeyMode {
    /// Whether requests have keys of their own (not [`KeyMode::Global`]).
    pub fn is_keyed(&self) -> bool {
        !matches!(self, KeyMode::Global)
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMode::Global => f.write_str("global"),
            KeyMode::PeerIp => f.write_str("peer-ip"),
            KeyMode::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// What a key mode looks like, for error messages.
pub const KEY_FORMAT: &str =
    "\"global\", \"peer-ip\" or \"header:NAME\" with a valid header name (\"header:x-api-key\")";

/// Why a string is no [`KeyMode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseKeyError {
    given: String,
}

impl fmt::Display for ParseKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is no key: expected {KEY_FORMAT}", self.given)
    }
}

impl std::error::Error for ParseKeyError {}

impl FromStr for KeyMode {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseKeyError {
            given: s.chars().take(64).collect(),
        };
        match s.trim() {
            "global" => Ok(KeyMode::Global),
            "peer-ip" | "peer_ip" => Ok(KeyMode::PeerIp),
            other => {
                let name = other.strip_prefix("header:").ok_or_else(error)?;
                HeaderName::from_str(name.trim())
                    .map(KeyMode::Header)
                    .map_err(|_| error())
            }
        }
    }
}

/// An address or a network (`10.0.0.0/8`, `::1`): a proxy whose
/// `X-Forwarded-For` is believed.
///
/// ```
/// use tower_hardening_ratelimit::IpNet;
///
/// let net: IpNet = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<IpNet>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    address: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether the network holds every address of its family (`0.0.0.0/0`,
    /// `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let ignored = u32::from(width - prefix);
    a.checked_shr(ignored).unwrap_or(0) == b.checked_shr(ignored).unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Why a string is no [`IpNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIpNetError {
    given: String,
}

impl fmt::Display for ParseIpNetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is no address or network: expected an IP address or ADDRESS/PREFIX (\"10.0.0.0/8\")",
            self.given
        )
    }
}

impl std::error::Error for ParseIpNetError {}

impl FromStr for IpNet {
    type Err = ParseIpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseIpNetError {
            given: s.chars().take(64).collect(),
        };
        let (address, prefix) = match s.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (s.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| error())?;
        let address = address.to_canonical();
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(error)?,
            None => width,
        };
        Ok(IpNet { address, prefix })
    }
}

/// How a request's peer address is found in its extensions.
pub type PeerAddrFn = fn(&http::Extensions) -> Option<IpAddr>;

/// The default [`PeerAddrFn`]: a `SocketAddr` in the extensions, axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`), tonic's `TcpConnectInfo`
/// (feature `tonic`).
pub fn peer_addr(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(addr) = extensions.get::<SocketAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr().map(|addr| addr.ip());
    }
    None
}

/// A request's key, as the limiter counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKey {
    /// Counted against the whole service.
    Global,
    /// Counted against its own key (the address, or a keyed hash of the
    /// header's value).
    Key(u64),
    /// A keyed limiter found no key (no peer address, no header, a value
    /// too long): counted against one bucket shared by all such requests.
    Missing,
}

/// Finds keys in HTTP requests, as a [`KeyMode`] says.
#[derive(Clone)]
pub struct HttpKeys {
    mode: KeyMode,
    trusted: Arc<[IpNet]>,
    peer: PeerAddrFn,
    hasher: RandomState,
}

impl fmt::Debug for HttpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpKeys")
            .field("mode", &self.mode)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl HttpKeys {
    pub(crate) fn new(mode: KeyMode, trusted: Arc<[IpNet]>, peer: PeerAddrFn) -> Self {
        HttpKeys {
            mode,
            trusted,
            peer,
            // Keyed by a random seed: a client cannot make keys collide.
            hasher: RandomState::new(),
        }
    }

    /// The key of a request with these extensions and headers.
    pub fn key(&self, extensions: &http::Extensions, headers: &http::HeaderMap) -> RequestKey {
        match &self.mode {
            KeyMode::Global => RequestKey::Global,
            KeyMode::PeerIp => match self.client_ip(extensions, headers) {
                Some(ip) => RequestKey::Key(ip_key(ip)),
                None => RequestKey::Missing,
            },
            KeyMode::Header(name) => match headers.get(name) {
                Some(value) if !value.is_empty() && value.len() <= MAX_KEY_LEN => {
                    RequestKey::Key(self.hasher.hash_one(value.as_bytes()))
                }
                _ => RequestKey::Missing,
            },
        }
    }

    /// The client's address: the peer's, or, when the peer is a trusted
    /// proxy, the rightmost `X-Forwarded-For` entry that is not one.
    fn client_ip(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Option<IpAddr> {
        let peer = (self.peer)(extensions)?.to_canonical();
        if self.trusted.is_empty() || !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            // Bytes, not text: a byte that is no visible ASCII in the part
            // the client wrote must not hide the entries the proxies added.
            .flat_map(|value| value.as_bytes().rsplit(|byte| *byte == b','))
            .take(MAX_FORWARDED_HOPS);
        for hop in hops {
            // An entry that is no address ends the walk: the last trusted
            // hop is the client as far as anyone can tell.
            let Some(ip) = forwarded_ip(hop) else {
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        Some(client)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }
}

/// The address of one `X-Forwarded-For` entry: `198.51.100.1`, or with
/// the port some proxies add (`198.51.100.1:51234`, `[2001:db8::1]:443`).
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

/// An address as a key, exactly (no hash: two clients never share one):
/// an IPv6 address by its /64 prefix (one host usually owns a whole
/// /64), an IPv4 address inside `0:ffff::/32`, a reserved IPv6 range no
/// client on the internet comes from.
fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => 0x0000_ffff_0000_0000 | u64::from(v4.to_bits()),
        IpAddr::V6(v6) => (v6.to_bits() >> 64) as u64,
    }
}

/// How a rate limiter finds the key of a request of type `Req`.
pub trait KeyOf<Req> {
    /// The request's key.
    fn key_of(&self, request: &Req) -> RequestKey;
}

impl<B> KeyOf<http::Request<B>> for HttpKeys {
    #[inline]
    fn key_of(&self, request: &http::Request<B>) -> RequestKey {
        self.key(request.extensions(), request.headers())
    }
}

/// Every request counted against the whole service: for requests that are
/// not HTTP (a limiter of any request type must be global).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyRequest;

impl<Req> KeyOf<Req> for AnyRequest {
    #[inline]
    fn key_of(&self, _: &Req) -> RequestKey {
        RequestKey::Global
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(mode: KeyMode, trusted: &[&str]) -> HttpKeys {
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        HttpKeys::new(mode, trusted.into(), peer_addr)
    }

    fn from(peer: &str, forwarded: Option<&str>) -> (http::Extensions, http::HeaderMap) {
        let mut extensions = http::Extensions::new();
        extensions.insert(SocketAddr::new(peer.parse().unwrap(), 4000));
        let mut headers = http::HeaderMap::new();
        if let Some(forwarded) = forwarded {
            headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        (extensions, headers)
    }

    #[test]
    fn forwarded_for_is_read_only_from_a_trusted_proxy() {
        let untrusting = keys(KeyMode::PeerIp, &[]);
        let (e, h) = from("203.0.113.9", Some("198.51.100.1"));
        let (e2, h2) = from("203.0.113.9", Some("198.51.100.2"));
        // A client choosing its own X-Forwarded-For chooses nothing.
        assert_eq!(untrusting.key(&e, &h), untrusting.key(&e2, &h2));

        let trusting = keys(KeyMode::PeerIp, &["10.0.0.0/8"]);
        let (e, h) = from("10.0.0.1", Some("198.51.100.1"));
        let (e2, h2) = from("10.0.0.1", Some("198.51.100.2"));
        assert_ne!(trusting.key(&e, &h), trusting.key(&e2, &h2));
        // The rightmost untrusted entry: what the client put before it is
        // not believed.
        let (e3, h3) = from("10.0.0.1", Some("1.2.3.4, 198.51.100.1, 10.0.0.7"));
        assert_eq!(trusting.key(&e3, &h3), trusting.key(&e, &h));
        // Not from the proxy: the header is the client's own.
        let (e4, h4) = from("203.0.113.9", Some("198.51.100.1"));
        assert_ne!(trusting.key(&e4, &h4), trusting.key(&e, &h));
    }

    #[test]
    fn ipv6_hosts_count_by_their_64() {
        let k = keys(KeyMode::PeerIp, &[]);
        let (a, h) = from("2001:db8:1:2::1", None);
        let (b, _) = from("2001:db8:1:2:ffff::9", None);
        let (c, _) = from("2001:db8:1:3::1", None);
        assert_eq!(k.key(&a, &h), k.key(&b, &h));
        assert_ne!(k.key(&a, &h), k.key(&c, &h));
    }

    #[test]
    fn no_peer_and_absurd_values_are_missing_keys() {
        let k = keys(KeyMode::PeerIp, &[]);
        assert_eq!(
            k.key(&http::Extensions::new(), &http::HeaderMap::new()),
            RequestKey::Missing
        );
        let k = keys(KeyMode::Header(HeaderName::from_static("x-api-key")), &[]);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", "a".repeat(MAX_KEY_LEN + 1).parse().unwrap());
        assert_eq!(
            k.key(&http::Extensions::new(), &headers),
            RequestKey::Missing
        );
        headers.insert("x-api-key", "k1".parse().unwrap());
        assert!(matches!(
            k.key(&http::Extensions::new(), &headers),
            RequestKey::Key(_)
        ));
    }
}
