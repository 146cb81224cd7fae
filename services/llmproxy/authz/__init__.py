"""The authorization service: Envoy's ext_authz check and the API key admin API.

headers      the headers set on allowed requests (and stripped from clients' requests)
keys         the key format and the keyed hash (HMAC-SHA256) that is all Redis holds
records      key records and audit entries, as stored
store        the KeyStore protocol and its Redis implementation; the invalidation feed
cache        the in-process key cache, kept fresh by invalidations
requests     the key and the body out of Envoy's CheckRequest (HTTP or gRPC)
authorizer   the decision: key, revocation, expiry, model, budget
admin        key management behind the admin API; validation checks its fields
adminauth    the admin bearer token
service      the gRPC servicers (Check, AuthzService); server wires them; cli for operators
"""
