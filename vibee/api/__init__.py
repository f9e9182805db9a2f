"""The public REST API (DESIGN 6.3): accounts, tokens, profile, usage; JSON and
problem+json, an OpenAPI 3.1 document generated from the route table."""
