"""L2 edge: Kubernetes objects from folders of YAML, one folder per cluster."""
