"""Simulators that stand in for what cannot run here: Telegram and the LLM providers."""
