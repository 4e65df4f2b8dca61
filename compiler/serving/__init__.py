"""Serving at scale: batch curves, prefill and decode pools sized for a request load, and the KV hand-off."""
