"""Coordination between instances: a local implementation now, Redis for many instances."""
