"""Operations kit: Prometheus alert rules, their unit tests and the Grafana dashboard."""
