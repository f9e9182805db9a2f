"""The AI service: providers, the fallback chain and what surrounds it."""
