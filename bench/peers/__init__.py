"""Peers measured with the same scenarios: a naive Flask relay and LiteLLM's proxy."""
