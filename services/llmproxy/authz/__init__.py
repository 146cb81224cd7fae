"""The authorization service: Envoy's ext_authz check, and the control API of API keys,
control tokens and the audit trail.

headers        the headers set on allowed requests (and stripped from clients' requests)
keys           the key and control token format and the keyed hash (HMAC-SHA256) Redis holds
records        key and control token records, as stored
store          the stores' protocols and Redis implementations; the invalidation feed
cache          the in-process key cache, kept fresh by invalidations
requests       the key and the body out of Envoy's CheckRequest (HTTP or gRPC)
authorizer     the decision: key, revocation, expiry, model, budget
admin          key management and audit pages; validation checks request fields
token_admin    control token management
introspection  whose a control token is (IntrospectToken, and authz's own access control)
service        the gRPC servicers (Check, AuthzService); server wires them; cli for operators
"""
