"""A second independent authorization server for m2m-guard's interop tests:
Authlib's RFC 9068 JWTBearerTokenGenerator behind the client-credentials
grant, served by Flask on loopback.

Usage: python3 authlib_server.py   (prints "ready <issuer>" once listening)

Authlib as documented: one signing key, so tokens carry no "kid"; RFC 8707 is
not implemented, so "aud" comes from get_audiences (here: the API identifier
every client is registered for); disallowed scopes are silently dropped.
"""

import sys

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.jose import JsonWebKey
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from flask import Flask, jsonify
from werkzeug.serving import make_server

API = "https://api.example.test"

CLIENTS = {
    # client id: (secret, allowed scopes, org)
    "global-app": ("global-secret", {"read:users", "write:flags"}, None),
    "org-app": ("org-secret", {"read:users"}, "org_acme"),
}


class Client(ClientMixin):
    def __init__(self, client_id):
        self.client_id = client_id
        self.secret, self.scopes, self.org = CLIENTS[client_id]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return client_secret == self.secret

    def check_endpoint_auth_method(self, method, endpoint):
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    # Authlib allows only client_secret_basic for this grant unless told otherwise.
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


KEY = JsonWebKey.generate_key("RSA", 2048, is_private=True)


def key_dict(is_private):
    # One key, published and used without a "kid", as Authlib's documented
    # single-key setup produces: the verifier must pick the key by alg.
    d = dict(KEY.as_dict(is_private=is_private))
    d.pop("kid", None)
    return d


class TokenGenerator(JWTBearerTokenGenerator):
    def get_jwks(self):
        # A single key (not a key set): Authlib then signs without a "kid".
        return KEY.as_pem(is_private=True)

    def get_audiences(self, client, user, scope):
        return [API]

    def get_extra_claims(self, client, grant_type, user, scope):
        return {"org_code": client.org} if client.org else {}


def main():
    app = Flask(__name__)
    server = make_server("127.0.0.1", 0, app)
    issuer = f"http://127.0.0.1:{server.server_port}"

    auth = AuthorizationServer(
        app,
        query_client=lambda cid: Client(cid) if cid in CLIENTS else None,
        save_token=lambda token, request: None,
    )
    auth.register_grant(ClientCredentialsGrant)
    auth.register_token_generator("default", TokenGenerator(issuer=issuer))

    @app.post("/token")
    def token():
        return auth.create_token_response()

    @app.get("/jwks")
    def jwks():
        return jsonify({"keys": [key_dict(is_private=False)]})

    @app.get("/.well-known/oauth-authorization-server")
    def metadata():
        return jsonify({"issuer": issuer, "token_endpoint": f"{issuer}/token", "jwks_uri": f"{issuer}/jwks"})

    print(f"ready {issuer}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
