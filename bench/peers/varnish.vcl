# Varnish 7.1 as the equivalent of wif-proxy: an allowlisting cache in front
# of the issuer (TLS: bench/peers/hitch.conf in front). Rendered by
# bench/lib.sh (it fills in the @...@ placeholders); see docs/performance.md for why each
# setting is what it is.
vcl 4.1;

backend issuer {
  .host = "127.0.0.1";
  .port = "@ISSUER_PORT@";
  .connect_timeout = 2s;
  .first_byte_timeout = 5s;
  .between_bytes_timeout = 5s;
}

sub vcl_recv {
  # Exact targets only: req.url is the target as sent, query included.
  if (req.url != "/v1/identity/oidc/plugins/.well-known/keys" &&
      req.url != "/v1/identity/oidc/plugins/.well-known/openid-configuration") {
    return (synth(404));
  }
  if (req.method != "GET" && req.method != "HEAD") {
    return (synth(405));
  }
  # Nothing of the client's request decides what is cached or fetched.
  return (hash);
}

sub vcl_hash {
  # One object per document whatever Host the client sent.
  hash_data(req.url);
  return (lookup);
}

sub vcl_backend_fetch {
  # Varnish copies the client's headers into the fetch, and stock VCL cannot
  # remove headers by pattern: the ones an issuer acts on are removed by name.
  set bereq.http.Host = "@ISSUER@";
  unset bereq.http.Authorization;
  unset bereq.http.Proxy-Authorization;
  unset bereq.http.Cookie;
  unset bereq.http.X-Vault-Token;
  unset bereq.http.X-Vault-Namespace;
  unset bereq.http.X-Vault-Request;
  unset bereq.http.X-Vault-Wrap-TTL;
  unset bereq.http.X-Vault-Wrap-Format;
  unset bereq.http.X-Vault-Policy-Override;
  unset bereq.http.X-Vault-MFA;
  unset bereq.http.X-Vault-Index;
  unset bereq.http.X-Vault-Inconsistent;
  unset bereq.http.X-Vault-Forward;
  unset bereq.http.X-Forwarded-For;
  unset bereq.http.X-Forwarded-Host;
  unset bereq.http.X-Forwarded-Proto;
  unset bereq.http.Forwarded;
  unset bereq.http.X-Real-IP;
  unset bereq.http.Via;
  unset bereq.http.X-Varnish;
  unset bereq.http.User-Agent;
  unset bereq.http.Accept;
  unset bereq.http.Accept-Language;
  unset bereq.http.Accept-Encoding;
  unset bereq.http.If-None-Match;
  unset bereq.http.If-Modified-Since;
  unset bereq.http.Range;
  unset bereq.http.Origin;
  unset bereq.http.Referer;
  return (fetch);
}

sub vcl_backend_response {
  # An issuer error never replaces the cached copy, and its body never
  # reaches a client: the stale copy is served while there is one, else 503.
  if (beresp.status != 200) {
    return (abandon);
  }
  # Issuer headers do not reach clients.
  unset beresp.http.Set-Cookie;
  unset beresp.http.X-Vault-Raft-Node;
  unset beresp.http.X-Vault-Cluster-Addr;
  unset beresp.http.Server;
  unset beresp.http.Vary;
  # 5 minutes whatever the issuer says; then served stale for a day while a
  # background fetch refreshes it, or while the issuer fails.
  set beresp.ttl = 300s;
  set beresp.grace = 24h;
  set beresp.http.Cache-Control = "public, max-age=300";
  set beresp.http.X-Content-Type-Options = "nosniff";
  return (deliver);
}

sub vcl_backend_error {
  set beresp.http.Content-Type = "text/plain; charset=utf-8";
  set beresp.body = "issuer unavailable";
  return (deliver);
}

sub vcl_deliver {
  unset resp.http.Via;
  unset resp.http.X-Varnish;
  return (deliver);
}

sub vcl_synth {
  set resp.http.Content-Type = "text/plain; charset=utf-8";
  set resp.body = resp.reason;
  return (deliver);
}
