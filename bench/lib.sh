# Shared by the bench scripts: the issuer's documents as static files.
# make_issuer_docs DIR PUBLIC_URL  -> DIR/v1/identity/oidc/plugins/.well-known/{keys,openid-configuration}
make_issuer_docs() {
  local doc="$1/v1/identity/oidc/plugins/.well-known"
  mkdir -p "$doc"
  python3 - "$doc" "$2" <<'PY'
import json, sys
doc, public = sys.argv[1], sys.argv[2]
n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
keys = {"keys": [{"use": "sig", "kty": "RSA", "kid": f"key-{i}", "alg": "RS256", "n": n, "e": "AQAB"} for i in range(2)]}
open(doc + "/keys", "w").write(json.dumps(keys, separators=(",", ":")))
issuer = public + "/v1/identity/oidc/plugins"
open(doc + "/openid-configuration", "w").write(json.dumps({"issuer": issuer, "jwks_uri": issuer + "/.well-known/keys"}))
PY
}

# wait_http URL: until it answers (10 s at most).
wait_http() {
  for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}
