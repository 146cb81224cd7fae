"""Inbound APIs other than chat completions, each translated to and from a chat completion."""
