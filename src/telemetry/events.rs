//! The bounded vocabularies of the hot path: why something was refused and
//! what the cache did. Each is an enum whose variants index pre-registered
//! counters, and whose `as_str` is the metric label and the log word.

/// An enum of label words: `ALL` in declaration order (so `v as usize`
/// indexes it) and `as_str`.
macro_rules! labels {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The metric label and log word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

labels! {
    /// Why the proxy refused a request or a connection itself.
    pub enum Deny {
        /// The target is not on the allowlist (for this host).
        Path => "path",
        /// Not GET or HEAD.
        Method => "method",
        /// The request carried (or announced) a body.
        Body => "body",
        /// HTTP/1.1 without exactly one Host header.
        Host => "host",
        /// Absolute-form, asterisk-form, or no usable target.
        Target => "target",
        /// The client address is outside the source-address allowlist.
        Ip => "ip",
        /// The client (or everybody) is over its request rate.
        RateLimit => "rate_limit",
        /// `max_connections` or `max_connections_per_ip` reached.
        ConnLimit => "conn_limit",
        /// A missing, malformed or untrusted PROXY header.
        ProxyProtocol => "proxy_protocol",
        /// The `*`-namespace cache is full.
        Capacity => "capacity",
        /// A request head over `max_header_bytes` or `max_headers` (`431`).
        HeadTooLarge => "head_too_large",
        /// A request head that is not HTTP (hyper's `400`), or an h2
        /// `:scheme` other than `http` or `https`.
        Malformed => "malformed",
    }
}

labels! {
    /// Why the proxy cut a connection it was serving, without an answer.
    /// Counted in the same family as [`Deny`] (`denied_requests_total`), by
    /// words of its own: a cut has no status, so it is not a `Deny`.
    pub enum Cut {
        /// h2: SETTINGS frames beyond their budget.
        SettingsFlood => "settings_flood",
        /// h2: PING frames beyond their budget.
        PingFlood => "ping_flood",
        /// h2: WINDOW_UPDATE frames beyond their budget.
        WindowUpdateFlood => "window_update_flood",
        /// h2: PRIORITY frames beyond their budget.
        PriorityFlood => "priority_flood",
        /// h2: RST_STREAM frames beyond their budget (rapid reset).
        ResetFlood => "reset_flood",
        /// h2: consecutive empty frames, or small DATA frames beyond their
        /// budget.
        EmptyFrameFlood => "empty_frame_flood",
        /// h2: a header block of too many CONTINUATION frames or bytes.
        ContinuationFlood => "continuation_flood",
        /// h2: HEADERS beyond their budget, or too many open streams.
        StreamFlood => "stream_flood",
        /// h2: GOAWAY, PUSH_PROMISE or unknown frames beyond their budget.
        OtherFrameFlood => "other_frame_flood",
        /// A request head (h2: header block) not complete within
        /// `header_read_timeout`.
        HeaderTimeout => "header_timeout",
        /// A started response or the socket made no progress for the write
        /// timeout (the peer grants no window, or reads nothing).
        WriteTimeout => "write_timeout",
        /// Nothing in flight for `idle_timeout` (h2: GOAWAY `NO_ERROR`).
        IdleTimeout => "idle_timeout",
        /// No TLS handshake within `tls.handshake_timeout`.
        HandshakeTimeout => "handshake_timeout",
        /// A TLS handshake that failed (no shared version or suite, a bad
        /// record, a client that gave up).
        HandshakeFailed => "handshake_failed",
    }
}

labels! {
    /// What the document cache did for a request or a refresh.
    pub enum CacheEvent {
        /// Served fresh from the cache.
        Hit => "hit",
        /// Nothing cached: fetched while the request waited.
        Miss => "miss",
        /// Served past freshness (refreshing, or the issuer failing).
        Stale => "stale",
        /// A background refresh started.
        Refresh => "refresh",
        /// Waited on a fetch another request had started.
        Coalesced => "coalesced",
        /// A fetch failed.
        Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, d) in Deny::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{}", d.as_str());
        }
        for (i, c) in Cut::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{}", c.as_str());
        }
        for (i, e) in CacheEvent::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i, "{}", e.as_str());
        }
    }

    /// `Deny` and `Cut` share one metric family: no word may mean both.
    #[test]
    fn deny_and_cut_words_are_distinct() {
        for c in Cut::ALL {
            assert!(Deny::ALL.iter().all(|d| d.as_str() != c.as_str()), "{}", c.as_str());
        }
    }
}
