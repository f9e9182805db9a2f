"""Telegram: the gateway seam (``gateway``), its implementations, login and session actors.

Domain code talks to Telegram only through :class:`vibee.telegram.gateway.Gateway`.
"""
