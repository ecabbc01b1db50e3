"""A small NATS client for Twisted: the wire protocol and a reconnecting service."""
