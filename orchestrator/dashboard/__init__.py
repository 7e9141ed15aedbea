"""`orch dashboard`: the cluster, the jobs, the GPU-hours and the cost in one web page."""
