"""The router's exact-match response cache: keys, policy, Redis store, in-flight sharing."""
