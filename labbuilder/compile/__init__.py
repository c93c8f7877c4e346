"""Stage 2 — model → plan: per-container ordered operations (ops), the CNI modes, kube-proxy's
tables and their reverse parser, what the kubelet starts. Pure data; never imports engine."""
